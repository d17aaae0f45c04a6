"""A containerd-like harness for the runc verbs, with the FAKE local sandbox at the Sandbox boundary.

The pytest process makes itself a child subreaper (as containerd's shim is), so the monitor and exec
proxies that ``create``/``exec --detach`` leave behind are reparented to it and can be waited on.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PR_SET_CHILD_SUBREAPER = 36
ROOT = Path(__file__).resolve().parents[3]


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def wait_pid(pid: int, timeout: float = 20.0) -> int:
    """waitpid with a deadline: the raw wait status (the pid must be our child or reparented to us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exit")


@dataclass
class Runtime:
    root: Path
    tmp: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = False, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        kw.setdefault("capture_output", "stdout" not in kw and "stderr" not in kw)
        r = subprocess.run(
            [sys.executable, "-m", "sevbox", "--root", str(self.root), *args],
            env=self.env, check=False, timeout=60, **kw,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise AssertionError(f"sevbox {args} -> {r.returncode}: {r.stderr!r}")
        return r

    def state(self, cid: str) -> dict[str, Any]:
        r = self.run("state", cid, check=True)
        value: dict[str, Any] = json.loads(r.stdout)
        return value

    def bundle(self, name: str, args: list[str], **process: Any) -> Path:
        b = self.tmp / name
        (b / "rootfs").mkdir(parents=True)
        config = {
            "ociVersion": "1.2.0",
            "process": {"args": args, "cwd": "/", "env": ["PATH=/usr/bin:/bin"], **process},
            "root": {"path": "rootfs"},
            "hostname": name,
        }
        (b / "config.json").write_text(json.dumps(config))
        return b


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> None:
    become_subreaper()


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    env = dict(os.environ)
    env["SEVBOX_TEST_SANDBOX"] = "tests.fakes.localsandbox:LocalSandbox"
    env["PYTHONPATH"] = str(ROOT)
    r = Runtime(root=tmp_path / "root", tmp=tmp_path, env=env)
    yield r
    for cid in os.listdir(r.root) if r.root.exists() else []:
        r.run("delete", "--force", cid)
