"""`sevbox run` end to end: a real guest per test (few of them), the CLI as a user runs it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.vm.conftest import qemu_pids_for, wait_no_qemu

pytestmark = pytest.mark.vm

SEVBOX = [sys.executable, "-m", "sevbox"]


def sevbox(root: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SEVBOX, "--root", str(root), *args], input=stdin, capture_output=True, timeout=180, check=False
    )


def test_run_streams_stdio_and_exits_with_the_status(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = make_bundle(["sh", "-c", "cat; echo done >&2; exit 3"])
    blob = os.urandom(1 << 20)
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "c1", stdin=blob)
    assert r.returncode == 3
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(blob).digest()  # nothing of ours on stdout
    assert r.stderr == b"done\n"
    assert wait_no_qemu(bundle) == []


def test_run_killed_by_sigkill_is_137(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle(["sh", "-c", "kill -9 $$"])
    r = sevbox(tmp_path / "state", "run", "-b", str(bundle), "c2")
    assert r.returncode == 137, r.stderr
    assert r.stdout == b""


def test_readonly_rootfs_and_root_path_dot(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle(
        [
            "sh",
            "-c",
            "touch /newfile 2>/dev/null && echo wrote || echo refused; test -f /config.json && echo dot",
        ],
        root={"path": ".", "readonly": True},
    )
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "c3")
    assert (r.returncode, r.stdout) == (0, b"refused\ndot\n"), r.stderr
    assert not (bundle / "newfile").exists()


def test_missing_executable_is_127_with_a_clear_error(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = make_bundle(["no-such-program", "arg"])
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "c4")
    assert r.returncode == 127
    assert b"no-such-program" in r.stderr and b"not found" in r.stderr
    assert b"Traceback" not in r.stderr and r.stdout == b""
    assert wait_no_qemu(bundle) == []


def test_bad_input_fails_before_any_vm(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle(["true"])
    state = tmp_path / "state"
    cases = []
    r = sevbox(state, "run", "--bundle", str(bundle), "../bad")
    cases.append((r, b"invalid container id"))
    (bundle / "config.json").write_text("{ not json")
    r = sevbox(state, "run", "--bundle", str(bundle), "ok1")
    cases.append((r, b"not valid JSON"))
    cfg = {"ociVersion": "1.0.2", "root": {"path": "nowhere"}, "process": {"args": ["true"], "cwd": "/"}}
    (bundle / "config.json").write_text(json.dumps(cfg))
    r = sevbox(state, "run", "--bundle", str(bundle), "ok2")
    cases.append((r, b"root.path"))
    for res, needle in cases:
        assert res.returncode == 1, res.stderr
        assert res.stderr.startswith(b"sevbox: ") and needle in res.stderr, res.stderr
        assert b"Traceback" not in res.stderr and res.stdout == b""
    assert qemu_pids_for(bundle) == []


@contextlib.contextmanager
def _started(bundle: Path, tmp_path: Path, cid: str) -> Iterator[subprocess.Popen[bytes]]:
    """`sevbox run` in the background, once its container printed "ready"; always reaped."""
    with subprocess.Popen(
        [*SEVBOX, "--root", str(tmp_path / "state"), "run", "--bundle", str(bundle), cid],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as p:
        try:
            assert p.stdout is not None
            line = p.stdout.readline()  # the container is running once it printed
            assert line == b"ready\n", p.stderr.read() if p.stderr else b""
            yield p
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_ctrl_c_is_forwarded_and_cleans_up(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle(["sh", "-c", "echo ready; exec sleep 1000"])
    with _started(bundle, tmp_path, "c5") as p:
        assert len(qemu_pids_for(bundle)) == 1
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 130  # the container's sleep died of SIGINT: 128 + 2
    assert wait_no_qemu(bundle) == []


def test_sigkill_of_sevbox_takes_qemu_with_it(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle(["sh", "-c", "echo ready; exec sleep 1000"])
    with _started(bundle, tmp_path, "c6") as p:
        p.kill()
        p.wait(10)
    assert wait_no_qemu(bundle, timeout=10) == []


def test_terminal_through_console_socket(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    import array
    import socket

    bundle = make_bundle(
        ["sh", "-c", "test -t 0 && echo tty-ok; stty size; read line; echo got:$line"],
        process={"terminal": True, "consoleSize": {"height": 12, "width": 34}},
    )
    sock_path = tmp_path / "console.sock"
    argv = [*SEVBOX, "--root", str(tmp_path / "state"), "run", "-b", str(bundle), "--console-socket"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(sock_path))
        srv.listen(1)
        srv.settimeout(60)
        with subprocess.Popen(
            [*argv, str(sock_path), "c7"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as p:
            try:
                conn, _ = srv.accept()
                fds = array.array("i")
                _, anc, _, _ = conn.recvmsg(100, socket.CMSG_SPACE(fds.itemsize))
                conn.close()
                fds.frombytes(anc[0][2][: fds.itemsize])
                master = fds[0]
                out = b""
                deadline = time.monotonic() + 60
                while b"12 34" not in out:
                    assert time.monotonic() < deadline, out
                    out += os.read(master, 4096)
                os.write(master, b"hello\n")
                while b"got:hello" not in out:
                    assert time.monotonic() < deadline, out
                    out += os.read(master, 4096)
                assert b"tty-ok" in out
                assert p.wait(60) == 0
                assert p.stdout is not None and p.stdout.read() == b""
                os.close(master)
            finally:
                if p.poll() is None:
                    p.kill()
                p.wait()
