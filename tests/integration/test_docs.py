"""The man pages and the bash completion say what the binaries do: every
config key of conf/conf_schema.c's table is in equilibrium.conf(5), every
eqctl command (as `eqctl --help` lists them) and exit code is in eqctl(1),
every equilibriumd option, signal and exit code is in equilibriumd(8); the
pages are built by scdoc in the build tree and render with man(1); the
completion offers exactly eqctl's commands and mode values."""

import os
import re
import subprocess

import pytest

from eqtest import util

MAN_DIR = util.build_path("docs", "man")
SCHEMA = os.path.join(util.SOURCE_ROOT, "conf", "conf_schema.c")
COMPLETION = os.path.join(util.SOURCE_ROOT, "deploy", "bash-completion", "eqctl")
EQCTL = util.build_path("eqctl", "eqctl")
EQUILIBRIUMD = util.build_path("supervisor", "equilibriumd")


def rendered(page):
    """The page as man(1) renders it, hyphenation and justification off so
    that names are not split across lines."""
    path = os.path.join(MAN_DIR, page)
    assert os.path.isfile(path), f"{path} not built (scdoc missing? meson -Dman=enabled)"
    res = subprocess.run(["man", "--nh", "--nj", "-l", path], capture_output=True, text=True,
                         env=dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING=""),
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr.lower(), res.stderr
    return res.stdout


def schema_keys():
    """(section, key) of every entry of conf__keys and conf__zone_keys."""
    text = open(SCHEMA).read()
    keys = re.findall(r"^\s*[A-Z]+\((\w+), (\w+)\b", text, re.M)
    keys += re.findall(r'^\s*\{ "([\w:]+)", "(\w+)",', text, re.M)
    assert len(keys) > 60, keys            # the table, not a regex gone blind
    return keys


def test_every_config_key_is_in_equilibrium_conf_5():
    page = rendered("equilibrium.conf.5")
    sections = re.findall(r"^ {3}\[([\w:]+)\]\s*$", page, re.M)
    missing = []
    for sec, key in schema_keys():
        # The key as a term ("  key = default") under its own section.
        body = page.split(f"   [{sec}]\n", 1)
        if len(body) != 2 or not re.search(rf"^ +{re.escape(key)} = ", body[1].split("\n   [", 1)[0], re.M):
            missing.append(f"{sec}.{key}")
    assert not missing, f"not documented in equilibrium.conf(5): {missing}; sections {sections}"
    assert "rdkafka." in page


def eqctl_commands():
    out = subprocess.run([EQCTL, "--help"], capture_output=True, text=True, check=True).stdout
    block = out.split("commands:", 1)[1].split("\n\n", 1)[0]
    # The synopsis column is the first 30 characters; the description follows.
    lines = [l[:30].split() for l in block.splitlines() if re.match(r"^  [a-z]", l)]
    cmds = [w[0] for w in lines]
    subs = [" ".join(w[:2]) for w in lines if len(w) > 1 and re.fullmatch(r"[a-z]+", w[1])]
    assert {"status", "prices", "history", "check", "mode", "watch", "spool"} <= set(cmds), cmds
    return sorted(set(cmds)), subs


def test_every_eqctl_command_and_exit_code_is_in_eqctl_1():
    page = rendered("eqctl.1")
    cmds, subs = eqctl_commands()
    for cmd in cmds + subs:
        assert re.search(rf"^ {{7}}{re.escape(cmd)}\b", page, re.M), f"eqctl {cmd} not in eqctl(1)"
    for opt in ("--shm", "--json", "--version", "--for", "--reason", "--count", "--decode"):
        assert opt in page, opt
    for mode in ("auto", "degraded", "emergency"):
        assert mode in page
    exits = page.split("EXIT STATUS", 1)[1].split("EXAMPLES", 1)[0]
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^ {{7}}{code}\s*$", exits, re.M), f"exit code {code} not in eqctl(1)"


def test_every_equilibriumd_option_signal_and_exit_code_is_in_equilibriumd_8():
    page = rendered("equilibriumd.8")
    help_text = subprocess.run([EQUILIBRIUMD, "--help"], capture_output=True, text=True,
                               check=True).stdout
    for opt in re.findall(r"--[a-z-]+", help_text):
        assert opt in page, f"equilibriumd {opt} not in equilibriumd(8)"
    exits = page.split("EXIT STATUS", 1)[1].split("FILES", 1)[0]
    for code in re.findall(r"\b(\d+) [a-z]", help_text.split("Exit:", 1)[1]):
        assert re.search(rf"^ {{7}}{code}\s*$", exits, re.M), f"exit code {code} not in equilibriumd(8)"
    for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2"):
        assert sig in page


def complete(*words):
    """What the completion offers for the command line `words` (the last
    one being completed)."""
    script = (
        "source /usr/share/bash-completion/bash_completion\n"
        f"source {COMPLETION}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n'
        'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        "_eqctl eqctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    res = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return sorted(filter(None, res.stdout.split("\n")))


@pytest.mark.skipif(not os.path.exists("/usr/share/bash-completion/bash_completion"),
                    reason="bash-completion is not installed")
def test_bash_completion_offers_eqctl_commands_options_and_modes():
    cmds, _subs = eqctl_commands()
    assert complete("eqctl", "") == cmds
    assert complete("eqctl", "--shm", "/x", "") == cmds
    assert complete("eqctl", "mode", "") == ["auto", "degraded", "emergency"]
    assert complete("eqctl", "mode", "em") == ["emergency"]
    assert "--for" in complete("eqctl", "mode", "degraded", "--")
    assert "--count" in complete("eqctl", "watch", "--")
    assert complete("eqctl", "spool", "") == ["requeue"]
    assert {"--shm", "--json", "--version", "--help"} <= set(complete("eqctl", "--"))


def test_every_binary_answers_version_with_one_version():
    """NAME VERSION, exit 0, the same VERSION everywhere: meson's project
    version, with +g<git describe id> when built from a git checkout."""
    bins = [EQUILIBRIUMD, EQCTL, util.build_path("deploy", "dev", "eq-kafka-dev")]
    bins += [util.build_path("workers", f"eq-{r}") for r in ("prober", "pricing", "forwarder")]
    info = subprocess.run(["meson", "introspect", "--projectinfo", util.build_dir()],
                          capture_output=True, text=True, check=True).stdout
    project_version = re.search(r'"version": "([^"]+)"', info).group(1)
    versions = set()
    for b in bins:
        res = subprocess.run([b, "--version"], capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, (b, res.stderr)
        name, version = res.stdout.strip().split(" ")
        assert name == os.path.basename(b)
        versions.add(version)
    assert len(versions) == 1, versions
    version = versions.pop()
    assert re.fullmatch(re.escape(project_version) + r"(\+g[0-9a-zA-Z.-]+)?", version), version
    if os.path.isdir(os.path.join(util.SOURCE_ROOT, ".git")) or \
            os.path.isfile(os.path.join(util.SOURCE_ROOT, ".git")):
        commit = subprocess.run(["git", "-C", util.SOURCE_ROOT, "rev-parse", "--short=7", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        if commit:
            assert "+g" in version, version
