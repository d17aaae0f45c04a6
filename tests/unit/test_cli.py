"""The command line's frame: version, help listing every verb, usage errors (exit 2, one line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sevbox import __version__, errors
from sevbox.cli import VERBS, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sevbox", *args], capture_output=True, text=True, check=False
    )


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0
    # runc's shape: "<name> version X" then "spec: <OCI runtime spec version>" (go-runc parses it)
    assert r.stdout.splitlines() == [f"sevbox version {__version__}", "spec: 1.2.0"]


def test_help_lists_every_verb_and_sub_verb() -> None:
    r = run("--help")
    assert r.returncode == 0
    for verb, (_, help_, subs) in VERBS.items():
        assert f"  {verb} " in r.stdout, verb
        assert help_ in r.stdout
        for sub, _sub_help in subs:
            assert f"    {sub} " in r.stdout, (verb, sub)
    for verb in (
        "create",
        "start",
        "state",
        "kill",
        "delete",
        "exec",
        "ps",
        "run",
        "attest",
        "check",
        "libvirt",
        "ghcb",
    ):
        assert verb in VERBS


@pytest.mark.parametrize(
    "argv",
    [["frobnicate"], ["--no-such-flag"], ["--log-format", "xml", "list"], ["--root"]],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str]) -> None:
    r = run(*argv)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sevbox: ")
    assert "Traceback" not in r.stderr


def test_error_exit_codes() -> None:
    assert errors.UsageError("x").exit_code == 2
    assert errors.NotFoundError("c1").exit_code == 1
    assert str(errors.NotFoundError("c1")) == "container c1 does not exist"
    assert str(errors.SevboxError("bad", hint="try this")) == "bad (try this)"
    assert issubclass(errors.EncryptionUnavailable, errors.HostError)
    assert issubclass(errors.AgentError, errors.VmError)


def test_main_in_process_returns_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
