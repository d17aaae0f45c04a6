"""The per-container monitor: the host process whose pid goes into ``--pid-file``.

It owns the VM (a Sandbox), relays the container's stdio (the fds ``create`` was started with, or a
pty), forwards the signals it receives to the container's init process, serves the control socket
(start, kill, exec, ps, pause, resume, shutdown), and finally exits with the container process's
status: its exit code, or killed by the same signal. containerd's shim, a child subreaper, reaps it.

The sandbox is any object with the Sandbox interface (``sevbox.sandbox.Sandbox``); tests may place
a fake at exactly that boundary.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import selectors
import signal
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sevbox.errors import SevboxError
from sevbox.runtime.control import Channel

__all__ = ["FORWARDED_SIGNALS", "Monitor", "SandboxLike", "exit_like"]

log = logging.getLogger(__name__)

# Signals the monitor passes on to the container's init process (SIGKILL/SIGSTOP can't be caught;
# the VM dies with the monitor). SIGCHLD/SIGPIPE stay local; SIGWINCH becomes a tty resize.
FORWARDED_SIGNALS = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGALRM, signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGURG,
    signal.SIGXCPU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
    signal.SIGSYS, signal.SIGTRAP, signal.SIGABRT,
)  # fmt: skip


# QMP commands a CLI call may run through the monitor (attestation of a paused launch, nothing else)
QMP_ALLOWED = (
    "query-sev", "query-sev-launch-measure", "query-sev-capabilities", "sev-inject-launch-secret",
    "query-sev-attestation-report", "query-status", "cont",
)  # fmt: skip


class SandboxLike(Protocol):
    qemu_pid: int

    def start_container(self) -> None: ...
    def exec_process(self, exec_id: str, process: Any) -> None: ...
    def signal(self, exec_id: str, signum: int) -> None: ...
    def write_stdin(self, exec_id: str, data: bytes) -> None: ...
    def close_stdin(self, exec_id: str) -> None: ...
    def resize(self, exec_id: str, rows: int, cols: int) -> None: ...
    def ps(self) -> list[int]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def fileno(self) -> int: ...
    def events(self) -> list[Any]: ...
    def shutdown(self, timeout: float = 5.0) -> None: ...
    def canary(self, marker_inverted: str | None) -> str: ...
    def finish_launch(self, timeout: float = ...) -> None: ...
    def create_container(self, bundle: Any) -> None: ...
    def qmp(self, command: str, arguments: dict[str, Any] | None) -> Any: ...


def exit_like(status: int) -> None:
    """End this process the way the container's process ended: 128+N dies by signal N."""
    if 128 < status < 128 + signal.NSIG:
        sig = status - 128
        if sig not in (signal.SIGCHLD, signal.SIGWINCH, signal.SIGURG, signal.SIGCONT, signal.SIGSTOP,
                       signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):  # fmt: skip
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
                os.kill(os.getpid(), sig)
    os._exit(status & 0xFF)


def tty_size(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


@dataclass
class _Proc:
    """A process the monitor relays: the init process ("") or an exec."""

    exec_id: str
    stdin: int | None  # host fd we read and send to the guest
    stdout: int | None  # host fds we write the guest's output to
    stderr: int | None
    tty: int | None = None  # host pty end (tty mode: both directions)
    conn: Channel | None = None  # exec: the proxy's connection
    owned: list[int] = field(default_factory=list)  # fds to close when done
    broken: set[int] = field(default_factory=set)  # output fds whose reader went away


class Monitor:
    """Run the event loop for one container until its init process has exited."""

    def __init__(
        self,
        *,
        sandbox: SandboxLike,
        listener: socket.socket,
        write_status: Callable[[dict[str, Any]], None],
        parse_process: Callable[[dict[str, Any]], Any],
        init_stdio: tuple[int | None, int | None, int | None],
        init_tty: int | None = None,
        pending_bundle: Any = None,
    ) -> None:
        self.sb = sandbox
        self.listener = listener
        self.write_status = write_status
        self.parse_process = parse_process
        self.sel = selectors.DefaultSelector()
        self.procs: dict[str, _Proc] = {}
        self.status = "created"
        self.exit_status: int | None = None
        # pre-attestation: the VM was launched paused; the container is made once it is let run
        self.pending_bundle = pending_bundle
        stdin, stdout, stderr = (None, None, None) if init_tty is not None else init_stdio
        self.init = _Proc("", stdin, stdout, stderr, tty=init_tty)
        self.procs[""] = self.init
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending: list[int] = []

    # ---- signals
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._pending.append(signum)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._sig_w)
        for sig in (*FORWARDED_SIGNALS, signal.SIGWINCH):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _handle_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._sig_r, 512)
        pending, self._pending = self._pending, []
        for sig in pending:
            if sig == signal.SIGWINCH:
                self._sync_size(self.init)
            elif self.status in ("running", "paused"):
                self._signal("", sig)
            elif self.status == "created":
                self._kill_before_start(sig)

    def _sync_size(self, proc: _Proc) -> None:
        if proc.tty is not None and self.status in ("running", "paused"):
            size = tty_size(proc.tty)
            if size:
                self.sb.resize(proc.exec_id, *size)

    def _signal(self, exec_id: str, sig: int) -> None:
        try:
            self.sb.signal(exec_id, sig)
        except SevboxError as err:
            log.warning("signal %d to %r: %s", sig, exec_id or "init", err)

    def _kill_before_start(self, sig: int) -> None:
        # The init process has not run yet: a signal that would end it ends the container.
        if sig in (signal.SIGCONT, signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH):
            return
        self.exit_status = 128 + sig

    # ---- fds
    def _watch(self, fd: int | None, tag: tuple[str, Any]) -> None:
        if fd is not None:
            with contextlib.suppress(ValueError, KeyError, OSError):
                self.sel.register(fd, selectors.EVENT_READ, tag)

    def _unwatch(self, fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(fd)

    def _write(self, proc: _Proc, fd: int | None, data: bytes) -> None:
        if fd is None or fd in proc.broken:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                # the reader is slow: wait for room rather than lose bytes
                sel = selectors.DefaultSelector()
                sel.register(fd, selectors.EVENT_WRITE)
                sel.select(1.0)
                sel.close()
                continue
            except OSError as err:
                if err.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                    proc.broken.add(fd)
                    return
                raise
            view = view[n:]

    def _start_stdin(self, proc: _Proc) -> None:
        src = proc.tty if proc.tty is not None else proc.stdin
        if src is None:
            if proc.tty is None:
                self.sb.close_stdin(proc.exec_id)
            return
        self._watch(src, ("stdin", proc.exec_id))

    def _pump_stdin(self, exec_id: str) -> None:
        proc = self.procs.get(exec_id)
        if proc is None:
            return
        src = proc.tty if proc.tty is not None else proc.stdin
        assert src is not None
        try:
            data = os.read(src, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.sb.write_stdin(exec_id, data)
            return
        self._unwatch(src)
        if proc.tty is None:
            self.sb.close_stdin(exec_id)

    # ---- the sandbox's events
    def _on_events(self) -> None:
        try:
            events = self.sb.events()
        except SevboxError as err:
            log.error("the VM stopped answering: %s", err)
            self._vm_gone()
            return
        for ev in events:
            kind = type(ev).__name__
            proc = self.procs.get(getattr(ev, "exec_id", ""))
            if kind == "Output" and proc is not None:
                stream = getattr(ev, "stream", "stdout")
                if proc.tty is not None:
                    self._write(proc, proc.tty, ev.data)
                else:
                    self._write(proc, proc.stderr if stream == "stderr" else proc.stdout, ev.data)
            elif kind == "Exited" and proc is not None:
                self._exited(proc, int(ev.status))

    def _vm_gone(self) -> None:
        for proc in list(self.procs.values()):
            self._exited(proc, 128 + signal.SIGKILL)

    def _exited(self, proc: _Proc, status: int) -> None:
        if proc.exec_id == "":
            if self.exit_status is None:
                self.exit_status = status
            return
        self.procs.pop(proc.exec_id, None)
        self._unwatch(proc.stdin)
        self._unwatch(proc.tty)
        if proc.conn is not None:
            self._unwatch(proc.conn.fileno())
            with contextlib.suppress(OSError):
                proc.conn.send({"exited": status})
            proc.conn.close()
        for fd in proc.owned:
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- control requests
    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)
        sock.settimeout(5.0)
        conn = Channel(sock)
        try:
            msg, fds = conn.recv(max_fds=3)
        except (OSError, SevboxError):
            conn.close()
            return
        if msg is None:
            conn.close()
            return
        try:
            keep = self._request(conn, msg, fds)
        except SevboxError as err:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            keep = False
            with contextlib.suppress(OSError):
                conn.send({"error": str(err)})
        if not keep:
            conn.close()

    def _request(self, conn: Channel, msg: dict[str, Any], fds: list[int]) -> bool:
        op = msg.get("op")
        if op == "state":
            conn.send({"status": self.status})
        elif op == "launch":
            if self.pending_bundle is None:
                raise SevboxError("the VM is not waiting to be launched")
            self._finish_launch()
            conn.send({"ok": True})
        elif op == "start":
            if self.status != "created":
                raise SevboxError(f"cannot start a container that is {self.status}")
            if self.pending_bundle is not None:
                self._finish_launch()  # the host may start without the owner's secret: nothing secret leaks
            try:
                self.sb.start_container()
            except SevboxError as err:
                status = getattr(err, "status", None)  # ProcessStartError: 127 not found, 126 not executable
                if isinstance(status, int):
                    # the process can't run: the container is over, with runc's status for it
                    self._write(self.init, self.init.stderr or self.init.tty, f"sevbox: {err}\n".encode())
                    self.exit_status = status
                raise
            self.status = "running"
            self._publish()
            self._start_stdin(self.init)
            self._sync_size(self.init)
            conn.send({"ok": True})
        elif op == "kill":
            sig = int(msg.get("signal", signal.SIGTERM))
            if self.status == "created":
                self._kill_before_start(sig)
            else:
                if self.status == "paused" and sig == signal.SIGKILL:
                    self.sb.resume()
                targets = list(self.procs) if msg.get("all") else [""]
                for exec_id in targets:
                    self._signal(exec_id, sig)
            conn.send({"ok": True})
        elif op == "ps":
            conn.send({"pids": self.sb.ps() if self.status != "created" else []})
        elif op == "pause":
            if self.status != "running":
                raise SevboxError(f"cannot pause a container that is {self.status}")
            self.sb.pause()
            self.status = "paused"
            self._publish()
            conn.send({"ok": True})
        elif op == "resume":
            if self.status != "paused":
                raise SevboxError(f"cannot resume a container that is {self.status}")
            self.sb.resume()
            self.status = "running"
            self._publish()
            conn.send({"ok": True})
        elif op == "shutdown":
            conn.send({"ok": True})
            self.exit_status = 128 + signal.SIGKILL
        elif op == "canary":
            marker = msg.get("marker_inverted")
            if marker is not None and not isinstance(marker, str):
                raise SevboxError("canary: marker_inverted must be a hex string")
            conn.send({"canary_inverted": self.sb.canary(marker)})
        elif op == "qmp":
            command, arguments = msg.get("command"), msg.get("arguments")
            if command not in QMP_ALLOWED:
                raise SevboxError(f"qmp: command {command!r} is not allowed through the monitor")
            conn.send(
                {"return": self.sb.qmp(str(command), arguments if isinstance(arguments, dict) else None)}
            )
        elif op == "exec":
            return self._exec(conn, msg, fds)
        else:
            raise SevboxError(f"unknown request {op!r}")
        return False

    def _finish_launch(self) -> None:
        """Let the paused VM run, wait for its agent, and make the container (status stays created)."""
        try:
            self.sb.finish_launch()
            self.sb.create_container(self.pending_bundle)
        except SevboxError:
            self.exit_status = 128 + signal.SIGKILL  # the VM can't host the container: it is over
            raise
        self.pending_bundle = None

    def _exec(self, conn: Channel, msg: dict[str, Any], fds: list[int]) -> bool:
        if self.status not in ("running",):
            raise SevboxError(f"cannot exec in a container that is {self.status}")
        exec_id = msg.get("exec_id")
        process = msg.get("process")
        if not isinstance(exec_id, str) or not exec_id or exec_id in self.procs:
            raise SevboxError(f"bad or duplicate exec id {exec_id!r}")
        if not isinstance(process, dict):
            raise SevboxError("exec needs a process object")
        proc_spec = self.parse_process(process)
        tty = bool(process.get("terminal"))
        if tty:
            if len(fds) != 1:
                raise SevboxError("a terminal exec passes exactly one fd (the pty)")
            proc = _Proc(exec_id, None, None, None, tty=fds[0], conn=conn, owned=list(fds))
        else:
            if len(fds) != 3:
                raise SevboxError("an exec passes three fds (stdin, stdout, stderr)")
            proc = _Proc(exec_id, fds[0], fds[1], fds[2], conn=conn, owned=list(fds))
        self.sb.exec_process(exec_id, proc_spec)
        self.procs[exec_id] = proc
        conn.sock.settimeout(None)
        conn.send({"ok": True})
        self._watch(conn.fileno(), ("conn", exec_id))
        self._start_stdin(proc)
        self._sync_size(proc)
        return True

    def _on_conn(self, exec_id: str) -> None:
        proc = self.procs.get(exec_id)
        if proc is None or proc.conn is None:
            return
        try:
            msg, _ = proc.conn.recv()
        except (OSError, SevboxError):
            msg = None
        if msg is None:
            # the exec's proxy went away: its process must not outlive it unseen
            self._unwatch(proc.conn.fileno())
            self._signal(exec_id, signal.SIGKILL)
            return
        if msg.get("op") == "signal":
            self._signal(exec_id, int(msg.get("signal", signal.SIGTERM)))
        elif msg.get("op") == "resize":
            with contextlib.suppress(SevboxError, ValueError, TypeError):
                self.sb.resize(exec_id, int(msg["rows"]), int(msg["cols"]))

    def _publish(self) -> None:
        self.write_status({"status": self.status, "exit": self.exit_status})

    # ---- main loop
    def serve(self) -> int:
        """Relay until the init process has exited; return its status (the VM is shut down)."""
        self._install_signals()
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.sel.register(self.sb.fileno(), selectors.EVENT_READ, ("sandbox", None))
        self.sel.register(self._sig_r, selectors.EVENT_READ, ("signal", None))
        self._publish()
        try:
            while self.exit_status is None:
                for key, _ in self.sel.select(timeout=1.0):
                    kind, arg = key.data
                    if kind == "sandbox":
                        self._on_events()
                    elif kind == "accept":
                        self._accept()
                    elif kind == "signal":
                        self._handle_signals()
                    elif kind == "stdin":
                        self._pump_stdin(arg)
                    elif kind == "conn":
                        self._on_conn(arg)
                    if self.exit_status is not None:
                        break
                if self._pending:
                    self._handle_signals()
        finally:
            status = self.exit_status if self.exit_status is not None else 128 + signal.SIGKILL
            for proc in list(self.procs.values()):
                if proc.exec_id:
                    self._exited(proc, 128 + signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.sb.shutdown()
            self.status = "stopped"
            self.exit_status = status
            with contextlib.suppress(OSError):
                self._publish()
        return status
