"""The host side of ``sevbox exec``: a proxy process per exec'd process.

The proxy hands its stdio (or a pty) to the container's monitor, which relays it, then waits: it
forwards the signals it receives to the exec'd process and exits with that process's status (killed
by the same signal when it was). With ``--detach`` the proxy is a daemon whose pid goes into
``--pid-file``; containerd signals exec'd processes by signalling that pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import selectors
import signal
import sys
import termios
import tty
from typing import TYPE_CHECKING, Any, NoReturn

from sevbox.errors import ContainerError, SevboxError
from sevbox.runtime import control
from sevbox.runtime.monitor import FORWARDED_SIGNALS, exit_like, tty_size

if TYPE_CHECKING:
    from sevbox.runtime.container import Container, ExecRequest

__all__ = ["run"]


def _open_tty(req: ExecRequest) -> tuple[int, bool]:
    """The fd the exec's terminal is relayed through, and whether it is our own terminal."""
    from sevbox.runtime.container import send_console

    if req.console_socket:
        master, slave = os.openpty()
        tty.setraw(slave)  # a clear channel: the guest's own pty does echo, CR/LF and ^C
        try:
            send_console(req.console_socket, master)
        finally:
            os.close(master)
        return slave, False
    if os.isatty(0):
        return 0, True
    raise ContainerError("exec --tty needs --console-socket or a terminal on stdin")


def _start(c: Container, req: ExecRequest, *, daemon: bool) -> tuple[control.Channel, int | None, bool]:
    process = dict(req.process)
    tty_fd, own_tty = (None, False)
    if process.get("terminal"):
        tty_fd, own_tty = _open_tty(req)
        if daemon and not own_tty:
            with contextlib.suppress(OSError):
                fcntl.ioctl(tty_fd, termios.TIOCSCTTY, 0)  # so that we get SIGWINCH
        size = tty_size(tty_fd)
        if size:
            process["consoleSize"] = {"height": size[0], "width": size[1]}
    fds = [tty_fd] if tty_fd is not None else [0, 1, 2]
    ch = c.channel()
    exec_id = f"exec-{secrets.token_hex(6)}"
    try:
        ch.request({"op": "exec", "exec_id": exec_id, "process": process}, fds)
    except OSError as err:
        ch.close()
        raise ContainerError(f"exec failed: {err}") from None
    except SevboxError:
        ch.close()
        raise
    ch.sock.settimeout(None)
    return ch, tty_fd, own_tty


def _wait(ch: control.Channel, tty_fd: int | None) -> int:
    pending: list[int] = []
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sig_w)
    for forwarded in (*FORWARDED_SIGNALS, signal.SIGWINCH):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(forwarded, lambda s, _f: pending.append(s))
    sel = selectors.DefaultSelector()
    sel.register(ch.fileno(), selectors.EVENT_READ, "conn")
    sel.register(sig_r, selectors.EVENT_READ, "sig")
    while True:
        for key, _ in sel.select():
            if key.data == "conn":
                try:
                    msg, _ = ch.recv()
                except (OSError, SevboxError):
                    msg = None
                if msg is None:
                    return 128 + signal.SIGKILL  # the monitor (and with it the VM) is gone
                if "exited" in msg:
                    return int(msg["exited"])
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(sig_r, 512)
        batch, pending[:] = list(pending), []
        for sig in batch:
            with contextlib.suppress(OSError, SevboxError):
                if sig == signal.SIGWINCH:
                    size = tty_size(tty_fd) if tty_fd is not None else None
                    if size:
                        ch.send({"op": "resize", "rows": size[0], "cols": size[1]})
                else:
                    ch.send({"op": "signal", "signal": sig})


def _daemon(c: Container, req: ExecRequest, ready_w: int) -> NoReturn:
    status = 1
    try:
        os.setsid()
        try:
            ch, tty_fd, _ = _start(c, req, daemon=True)
        except SevboxError as err:
            os.write(ready_w, json.dumps({"ok": False, "error": str(err)}).encode())
            os._exit(1)
        # the monitor has its own copies of our stdio: don't hold the caller's pipes open
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        os.write(ready_w, b'{"ok": true}')
        os.close(ready_w)
        status = _wait(ch, tty_fd)
    except BaseException:
        os._exit(1)
    exit_like(status)
    os._exit(status & 0xFF)


def run(c: Container, req: ExecRequest) -> int:
    from sevbox.runtime.container import _write_pid_file

    if req.detach:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _daemon(c, req, ready_w)
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as f:
            raw = f.read()
        try:
            msg: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            msg = {}
        if not msg.get("ok"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise ContainerError(str(msg.get("error") or "exec failed: its proxy died"))
        if req.pid_file:
            _write_pid_file(req.pid_file, pid)
        return 0
    ch, tty_fd, own_tty = _start(c, req, daemon=False)
    saved = None
    if own_tty and tty_fd is not None:
        saved = termios.tcgetattr(tty_fd)
        tty.setraw(tty_fd)
    try:
        return _wait(ch, tty_fd)
    finally:
        if saved is not None and tty_fd is not None:
            termios.tcsetattr(tty_fd, termios.TCSADRAIN, saved)
        ch.close()
