"""The host-side pty whose master goes over --console-socket is a clear channel (raw): the guest's
own pty already echoes, maps LF to CRLF and turns ^C into SIGINT. A cooked host pty did all of that
a second time (found under containerd: `ctr run -t` printed "\\r\\r\\r\\n" where runc gives "\\r\\r\\n")."""

from __future__ import annotations

import os
import termios
import threading
from subprocess import DEVNULL

from tests.unit.runtime.conftest import Runtime, wait_pid
from tests.unit.runtime.test_lifecycle import _console_listener, _receive_master, read_pid


def assert_raw(master: int) -> None:
    """On Linux the master reports the pty's (the slave's) settings."""
    iflag, oflag, _cflag, lflag, _ispeed, _ospeed, _cc = termios.tcgetattr(master)
    assert not oflag & termios.OPOST, "output post-processing (ONLCR) on the host pty"
    assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG), (
        "echo/canonical/signals on the host pty"
    )
    assert not iflag & (termios.ICRNL | termios.IXON), "input mapping on the host pty"


def test_create_console_pty_is_raw(rt: Runtime) -> None:
    b = rt.bundle("braw", ["true"], terminal=True)
    srv = _console_listener(rt.tmp / "console.sock")
    r = rt.run("create", "--bundle", str(b), "--console-socket", str(rt.tmp / "console.sock"),
               "--pid-file", str(b / "p"), "raw1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    master = _receive_master(srv)
    srv.close()
    try:
        assert_raw(master)
    finally:
        rt.run("delete", "--force", "raw1", check=True)
        wait_pid(read_pid(b / "p"))
        os.close(master)


def test_exec_console_pty_is_raw(rt: Runtime) -> None:
    b = rt.bundle("braw2", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "raw2", check=True, stdin=DEVNULL, stdout=DEVNULL)
    rt.run("start", "raw2", check=True)
    srv = _console_listener(rt.tmp / "exec-console.sock")
    got: dict[str, int] = {}
    t = threading.Thread(target=lambda: got.update(fd=_receive_master(srv)))
    t.start()
    r = rt.run("exec", "--tty", "--detach", "--console-socket", str(rt.tmp / "exec-console.sock"),
               "--pid-file", str(b / "e.pid"), "raw2", "sleep", "1")  # fmt: skip
    t.join(30)
    srv.close()
    assert r.returncode == 0, r.stderr
    try:
        assert_raw(got["fd"])
    finally:
        wait_pid(int((b / "e.pid").read_bytes()))
        os.close(got["fd"])
