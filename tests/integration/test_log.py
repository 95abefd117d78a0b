"""[log] level (DESIGN.md "Config"): the threshold every process logs at,
applied at start and on reload by the supervisor and each worker."""

import os
import re
import signal

from eqtest import wait_for


def lines(d, pattern):
    return [line for line in d.log_text().splitlines() if re.search(pattern, line)]


def test_log_level_filters_every_process_and_follows_reload(daemon, redis):
    d = daemon({"log.level": "warning"}, pg_primary=False, kafka=False)
    wait_for(lambda: d.http("GET", "/readyz")[0] == 200, timeout=20, desc="ready")
    # Workers announce readiness at info: not with level = warning.  (The
    # supervisor's first lines come before the config is read.)
    assert not lines(d, r"^<[67]>eq-(pricing|prober|forwarder)\["), d.log_tail(20)
    assert not lines(d, r"^<[67]>equilibriumd\[.*ready after"), d.log_tail(20)

    d.reload({"log.level": "debug"})
    wait_for(lambda: lines(d, r"^<5>equilibriumd\[.*reload: .* accepted"), timeout=10,
             desc="reload accepted")
    victim = next(w for w in d.workers("pricing") if w["pid"])
    os.kill(victim["pid"], signal.SIGKILL)
    # The supervisor's state machine logs each transition at debug.
    wait_for(lambda: lines(d, r"^<7>equilibriumd\[.*eq-pricing: .* --"), timeout=10,
             desc="debug lines after the reload")
    wait_for(lambda: lines(d, r"^<6>eq-pricing\[.*ready"), timeout=10,
             desc="the new worker logs at info")
