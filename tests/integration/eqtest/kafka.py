"""The development Kafka broker: <build>/deploy/dev/eq-kafka-dev, librdkafka's
mock cluster on loopback (built by helper "ring").

CLI contract (BRIEF.md): `eq-kafka-dev --bootstrap-file F [--brokers N]
[--partitions N] [--topics a,b,c]` writes "host:port[,host:port...]" to F
once ready, then reads line commands on stdin (`down [ID]`, `up [ID]`,
`latency MS [ID]`, `leader TOPIC P ID`, `move-leaders ID`, `leaders`,
`quit`) and answers `ok` on stdout for each. With --brokers N, broker ids
are 1..N and partition p starts led by broker p % N + 1; a broker taken
down keeps leading its partitions until they are moved (librdkafka 2.0.2's
mock has no controller). The mock cluster is taken down and up with those commands,
never restarted mid-test (DESIGN.md, "Known limits").

Reading messages back goes through kcat, in a binary-safe format: for each
message kcat prints a header line of decimal numbers
"<partition> <offset> <key length> <value length>\\n" followed by exactly
that many key bytes, value bytes and a "\\n". Lengths are -1 for a NULL key
or value. Message values are MessagePack (proto/), so they may contain any
byte, newlines included; the lengths make the split exact.
"""

import os
import queue
import subprocess
import threading
from collections import namedtuple

from . import util

DEFAULT_TOPICS = ("pricing.quotes", "pricing.events", "system.events")
KCAT_FORMAT = "%p %o %K %S\n%k%s\n"

Record = namedtuple("Record", "partition offset key value")


class Kafka:
    def __init__(self, workdir, binary=None, partitions=1, topics=DEFAULT_TOPICS, brokers=1):
        self.workdir = workdir
        self.brokers = brokers
        self.binary = binary or util.build_path("deploy", "dev", "eq-kafka-dev")
        self.partitions = partitions
        self.topics = list(topics)
        self.bootstrap_file = os.path.join(workdir, "kafka.bootstrap")
        self.log_path = os.path.join(workdir, "eq-kafka-dev.log")
        self.bootstrap = None
        self.proc = None
        self._lines = queue.Queue()
        os.makedirs(workdir, exist_ok=True)

    def start(self, timeout=15.0):
        """Starts eq-kafka-dev and waits for its bootstrap file. Raises
        HarnessError if the binary is not built (no skip: a missing broker is
        a broken build, not an optional feature)."""
        util.require_binary(self.binary, "eq-kafka-dev (the mock Kafka broker)", "ring")
        try:
            os.unlink(self.bootstrap_file)
        except FileNotFoundError:
            pass
        argv = [self.binary, "--bootstrap-file", self.bootstrap_file,
                "--partitions", str(self.partitions), "--topics", ",".join(self.topics),
                "--brokers", str(self.brokers)]
        self._log = open(self.log_path, "ab")
        self.proc = util.track(subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=self.workdir, start_new_session=True), "eq-kafka-dev")
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()

        def ready():
            if self.proc.poll() is not None:
                raise util.HarnessError(
                    f"eq-kafka-dev exited with code {self.proc.returncode} before "
                    f"writing {self.bootstrap_file}:\n{util.tail(self.log_path)}")
            try:
                with open(self.bootstrap_file) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            text = text.strip()
            host, _, port = text.rpartition(":")
            return text if host and port.isdigit() else None

        try:
            self.bootstrap = _wait_raising(ready, timeout, "eq-kafka-dev bootstrap file")
        except BaseException:
            self.close()
            raise
        return self

    def _read_stdout(self, proc):
        for line in proc.stdout:
            self._lines.put(line.decode(errors="replace").strip())
        self._lines.put(None)

    def command(self, line, timeout=10.0):
        """Sends one stdin command and waits for its `ok` (returned, with
        whatever data follows it)."""
        if self.proc is None or self.proc.poll() is not None:
            raise util.HarnessError(f"eq-kafka-dev is not running (command {line!r})")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        try:
            answer = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise util.HarnessError(f"eq-kafka-dev: no answer to {line!r} in {timeout}s") from None
        if answer != "ok" and not answer.startswith("ok "):
            raise util.HarnessError(f"eq-kafka-dev: {line!r} answered {answer!r}:\n"
                                    f"{util.tail(self.log_path)}")
        return answer

    def down(self, broker=None):
        """Every broker (or broker id `broker`) down: connections are
        refused. A single broker down keeps leading its partitions (so
        their produce requests fail) until move_leaders(broker)."""
        return self.command("down" if broker is None else f"down {int(broker)}")

    def up(self, broker=None):
        return self.command("up" if broker is None else f"up {int(broker)}")

    def latency(self, ms, broker=None):
        """Adds ms of round-trip time to every broker request (or one
        broker's)."""
        return self.command(f"latency {int(ms)}" + ("" if broker is None else f" {int(broker)}"))

    def set_leader(self, topic, partition, broker):
        return self.command(f"leader {topic} {int(partition)} {int(broker)}")

    def move_leaders(self, broker):
        """Moves every partition `broker` leads to the brokers that are up
        (what a real cluster's controller does when a broker dies); returns
        how many moved."""
        return int(self.command(f"move-leaders {int(broker)}").split()[1])

    def leaders(self):
        """{(topic, partition): broker id} as eq-kafka-dev set them."""
        out = {}
        for item in self.command("leaders").split()[1:]:
            tp, _, b = item.rpartition("=")
            t, _, p = tp.rpartition(":")
            out[(t, int(p))] = int(b)
        return out

    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        util.untrack(self.proc)
        self.proc = None
        self._log.close()

    # -- reading messages back --------------------------------------------

    def records(self, topic, timeout=10.0):
        """Every message of topic, from the beginning, as Record(partition,
        offset, key, value) with key/value bytes (None for NULL), in
        partition order then offset order."""
        argv = ["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-o", "beginning",
                "-e", "-q", "-f", KCAT_FORMAT, "-X", "topic.metadata.refresh.interval.ms=1000"]
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise util.HarnessError(
                f"kcat could not read topic {topic!r} from {self.bootstrap} within "
                f"{timeout}s (broker down?): {(exc.stderr or b'').decode(errors='replace')}"
            ) from None
        if res.returncode != 0:
            raise util.HarnessError(f"kcat -t {topic} failed ({res.returncode}): "
                                    f"{res.stderr.decode(errors='replace').strip()}")
        recs = parse_kcat(res.stdout)
        recs.sort(key=lambda r: (r.partition, r.offset))
        return recs

    def consume(self, topic, timeout=10.0):
        """The raw values (bytes) of every message in topic, from the
        beginning."""
        return [r.value for r in self.records(topic, timeout=timeout)]

    def wait_messages(self, topic, count, timeout=20.0):
        """Polls until topic holds at least count messages; returns the
        records."""
        return util.wait_for(
            lambda: (lambda r: r if len(r) >= count else None)(self.records(topic)),
            timeout=timeout, interval=0.25, desc=f"{count} messages in {topic}")

    def __repr__(self):
        return f"<Kafka {self.bootstrap}>"


def decode(value):
    """Unpacks one MessagePack message value (python3-msgpack) into Python
    objects; str keys and values stay str, bin stays bytes."""
    import msgpack  # imported here: only tests that decode need it
    return msgpack.unpackb(value, raw=False, strict_map_key=False)


def parse_kcat(data):
    """Parses kcat output in KCAT_FORMAT into Records."""
    recs = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        part, off, klen, vlen = (int(x) for x in data[pos:nl].split())
        pos = nl + 1
        key = None
        if klen >= 0:
            key, pos = data[pos:pos + klen], pos + klen
        value = None
        if vlen >= 0:
            value, pos = data[pos:pos + vlen], pos + vlen
        if data[pos:pos + 1] != b"\n":
            raise ValueError(f"kcat output out of step at byte {pos}")
        pos += 1
        recs.append(Record(part, off, key, value))
    return recs


def _wait_raising(pred, timeout, desc):
    """wait_for, except that a HarnessError raised by pred ends the wait."""
    box = {}

    def wrapped():
        try:
            return pred()
        except util.HarnessError as exc:
            box["exc"] = exc
            return True

    value = util.wait_for(wrapped, timeout=timeout, desc=desc)
    if "exc" in box:
        raise box["exc"]
    return value
