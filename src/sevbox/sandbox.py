"""The host side of one micro-VM: QEMU with a ready agent, driven by the runtime.

::

    with Sandbox.launch(rootfs=bundle.rootfs, name="c1") as sb:
        sb.create_container(bundle)
        sb.start_container()
        status = relay(sb, "", 0, 1, 2)       # exit code, or 128+N when killed by signal N

A reader thread takes frames off the agent channel: responses go to the request waiting for them,
everything else becomes an :class:`Output` or :class:`Exited` event in a queue, and a byte on a
pipe (``fileno()``) says events are pending. ``close()`` always leaves no QEMU, socket, thread or
temp file behind, whatever happened before.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from sevbox import protocol as P
from sevbox.errors import AgentError, BundleError, ContainerError, SevboxError, VmError
from sevbox.qemu.argv import DeviceFlags, Share, VmSpec, kernel_cmdline
from sevbox.qemu.machine import Machine
from sevbox.runtime.bundle import Bundle, Mount, Process

__all__ = ["Event", "Exited", "Output", "ProcessStartError", "Sandbox", "relay"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

READY_TIMEOUT = 90.0  # TCG boots take seconds; a loaded 2-core host can take many
REQUEST_TIMEOUT = 30.0
FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip


@dataclass(frozen=True)
class Output:
    exec_id: str
    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True)
class Exited:
    exec_id: str
    status: int  # exit code, or 128+N when killed by signal N


Event = Output | Exited


class ProcessStartError(ContainerError):
    """The process could not be started in the guest (e.g. no such executable). ``status`` is what
    runc would exit with (127 not found, 126 not executable)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def host_tsc_khz() -> int | None:
    """The host TSC rate in kHz (under TCG the guest's TSC is the host's), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return round(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_spec(p: Process) -> P.ProcessSpec:
    return P.ProcessSpec(
        args=p.args,
        env=p.env,
        cwd=p.cwd,
        uid=p.uid,
        gid=p.gid,
        additional_gids=p.additional_gids,
        terminal=p.terminal,
        console_size=p.console_size,
        rlimits=tuple(P.Rlimit(r.type, r.hard, r.soft) for r in p.rlimits),
        no_new_privileges=p.no_new_privileges,
        capabilities=p.capabilities,
        umask=p.umask,
    )


def container_spec(b: Bundle, tag: str = "rootfs") -> P.ContainerSpec:
    if b.process is None:
        raise ContainerError("the bundle's config.json has no process to run")
    return P.ContainerSpec(
        process=process_spec(b.process),
        rootfs_tag=tag,
        hostname=b.hostname,
        readonly=b.readonly,
        mounts=_mounts(b),
        masked_paths=b.masked_paths,
        readonly_paths=b.readonly_paths,
        sysctl=dict(b.sysctl),
        secrets=_launch_secrets(b),
    )


def volumes(b: Bundle) -> tuple[tuple[str, Path, bool], ...]:
    """The host directories a bundle binds from outside its rootfs: (9p tag, path, read-only),
    one virtio-9p device each, in mount order (the tags are vol0, vol1, ...)."""
    shares = [m for m in b.mounts if m.type == "share"]
    return tuple((f"vol{i}", Path(m.source), "ro" in m.options) for i, m in enumerate(shares))


def _mounts(b: Bundle) -> tuple[P.Mount, ...]:
    tags = iter(tag for tag, _, _ in volumes(b))
    return tuple(
        P.Mount(m.destination, "9p", next(tags), m.options) if m.type == "share" else _mount(m)
        for m in b.mounts
    )


def _mount(m: Mount) -> P.Mount:
    """A bundle mount for the agent; a host file bound from outside the rootfs travels as content."""
    if m.type != "file":
        return P.Mount(m.destination, m.type, m.source, m.options)
    try:
        content = Path(m.source).read_bytes()
    except OSError as err:
        raise ContainerError(f"bind source {m.source}: {err.strerror}") from None
    return P.Mount(m.destination, "file", "", m.options, data=base64.b64encode(content).decode())


def _launch_secrets(b: Bundle) -> tuple[tuple[str, str], ...]:
    """The bundle's ``sevbox.secrets`` annotation (launch secrets the agent copies to /run/secrets)."""
    text = b.annotations.get(P.SECRETS_ANNOTATION)
    if text is None:
        return ()
    try:
        return P.parse_secrets(text)
    except P.ProtocolError as err:
        raise BundleError(f"annotation {err}") from None


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: P.Response | None = None


class Sandbox:
    """One VM with a ready agent. Build with :meth:`launch`; always ``close()`` (or use ``with``)."""

    def __init__(self, machine: Machine, chan: socket.socket, accel: str) -> None:
        self.machine = machine
        self.accel = accel
        self.boot_timings: dict[str, float] = {}
        self._chan = chan
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._events: collections.deque[Event] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ready = threading.Event()
        self._ready_msg: P.Ready | None = None
        self._dead: str | None = None
        self._closed = False
        self.awaiting_launch = False  # launched paused (-S), waiting for finish_launch()
        self.rejected: list[str] = []  # Rejected events from the agent (our protocol bugs)
        self._reader = threading.Thread(target=self._read_loop, name=f"sevbox-{machine.name}", daemon=True)
        self._reader.start()

    # -- construction --
    @classmethod
    def launch(
        cls,
        *,
        rootfs: Path,
        name: str,
        memory_mib: int = 256,
        vcpus: int = 1,
        log_dir: Path | None = None,
        machine: str = "microvm",
        accel: str | None = None,
        readonly_rootfs: bool = False,
        volumes: tuple[tuple[str, Path, bool], ...] = (),
        firmware: Path | None = None,
        secure_devices: bool = False,
        timeout: float = READY_TIMEOUT,
        spec_overrides: dict[str, object] | None = None,
        paused: bool = False,
    ) -> Sandbox:
        """Boot a VM sharing ``rootfs`` over 9p and return once its agent answered.

        ``machine="q35"`` with ``firmware`` (an OVMF code image) boots the bzImage through UEFI,
        the path SEV needs; otherwise the vmlinux boots through PVH (much faster under TCG).
        Raises VmError/AgentError carrying QEMU's log when the VM does not come up.
        """
        from sevbox.guest.image import build_image
        from sevbox.qemu.accel import choose_accel

        t0 = time.monotonic()
        image = build_image()
        t_image = time.monotonic()
        if accel is None:
            choice = choose_accel(image.vmlinux)
            accel = choice.name
            log.info("accelerator: %s (%s)", choice.name, choice.reason)
        spec = VmSpec(
            kernel=image.bzimage if firmware is not None else image.vmlinux,
            initrd=image.initrd,
            machine=machine,
            accel=accel,
            memory_mib=memory_mib,
            vcpus=vcpus,
            firmware=firmware,
            shares=(
                Share(
                    path=Path(rootfs),
                    readonly=readonly_rootfs,
                    security_model="passthrough" if os.geteuid() == 0 else "none",
                ),
                *(
                    Share(
                        path=Path(path),
                        tag=tag,
                        readonly=ro,
                        security_model="passthrough" if os.geteuid() == 0 else "none",
                    )
                    for tag, path, ro in volumes
                ),
            ),
            device_flags=DeviceFlags.secure() if secure_devices else DeviceFlags(),
        )
        spec = replace(spec, cmdline=kernel_cmdline(spec, tsc_khz=host_tsc_khz()), paused=paused)
        if spec_overrides:
            spec = replace(spec, **spec_overrides)  # type: ignore[arg-type]
        m = Machine(spec, name=name, log_dir=log_dir)
        sb: Sandbox | None = None
        try:
            chan = m.launch()
            t_launched = time.monotonic()
            sb = cls(m, chan, accel)
            if paused:  # the owner measures (and injects) first; finish_launch() lets it run
                sb.awaiting_launch = True
                sb.boot_timings = {"image": t_image - t0}
                return sb
            sb._wait_ready(t_launched + timeout)
            t_ready = time.monotonic()
            g = sb._ready_msg.timings if sb._ready_msg else {}
            guest_ready = g.get("ready", g.get("port", 0.0))
            sb.boot_timings = {
                "image": t_image - t0,
                "qemu_start": max(0.0, (t_ready - t_launched) - guest_ready),  # launch -> guest kernel entry
                "kernel_to_init": g.get("init", 0.0),
                "agent_ready": guest_ready - g.get("init", 0.0),  # python start, modules, port
                "python_start": g.get("main", g.get("init", 0.0)) - g.get("init", 0.0),
                "modules": g.get("modules", 0.0) - g.get("main", g.get("init", 0.0)),
                "launch_to_ready": t_ready - t_launched,
            }
            return sb
        except BaseException:
            if sb is not None:
                sb.close()
            else:
                m.close()
            raise

    def finish_launch(self, timeout: float = READY_TIMEOUT) -> None:
        """Let a VM launched ``paused`` run (QMP cont) and wait for its agent (pre-attestation)."""
        if not self.awaiting_launch:
            raise ContainerError("the VM was not launched paused, or has been released already")
        self.machine.command("cont")
        self._wait_ready(time.monotonic() + timeout)
        self.awaiting_launch = False

    def _wait_ready(self, deadline: float) -> None:
        while not self._ready.wait(0.05):
            if self._dead is not None or not self.machine.is_running():
                self.machine.wait(1.0)
                raise self.machine.error(
                    f"the VM stopped before its agent answered ({self._dead or 'QEMU exited'})"
                )
            if time.monotonic() > deadline:
                raise self.machine.error("the guest agent did not answer in time", AgentError)
        if self._ready_msg is None or self._ready_msg.version != P.VERSION:
            raise self.machine.error("the guest agent speaks another protocol version", AgentError)

    # -- the reader thread --
    def _read_loop(self) -> None:
        dec = P.Decoder()
        reason = "the agent channel closed"
        try:
            while True:
                try:
                    data = self._chan.recv(256 * 1024)
                except InterruptedError:
                    continue
                if not data:
                    break
                for kind, req_id, payload in dec.feed(data):
                    self._on_frame(kind, req_id, payload)
        except P.ProtocolError as err:
            reason = f"the agent broke the protocol: {err}"
        except OSError as err:
            reason = f"the agent channel failed: {err}"
        finally:
            with self._lock:
                if self._dead is None:
                    self._dead = reason
                pending = list(self._pending.values())
            for p in pending:
                p.done.set()
            self._wake()

    def _on_frame(self, kind: int, req_id: int, payload: bytes) -> None:
        if kind in (P.Kind.STDOUT, P.Kind.STDERR):
            exec_id, data = P.decode_data(payload)
            self._push(Output(exec_id, "stdout" if kind == P.Kind.STDOUT else "stderr", data))
        elif kind == P.Kind.RESPONSE:
            resp = P.decode_response(payload)
            with self._lock:
                p = self._pending.get(req_id)
            if p is None:
                log.warning("agent answered unknown request %d", req_id)
                return
            p.response = resp
            p.done.set()
        elif kind == P.Kind.EVENT:
            msg = P.decode_event(payload)
            if isinstance(msg, P.Ready):
                self._ready_msg = msg
                self._ready.set()
            elif isinstance(msg, P.Exited):
                self._push(Exited(msg.exec_id, msg.status))
            elif isinstance(msg, P.Rejected):
                log.warning("agent rejected a frame: %s", msg.reason)
                self.rejected.append(msg.reason)
        else:
            raise P.ProtocolError(f"unexpected frame kind {kind} from the agent")

    def _push(self, ev: Event) -> None:
        with self._lock:
            self._events.append(ev)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    # -- requests --
    def _send(self, data: bytes) -> None:
        if self._dead is not None:
            raise self.machine.error(f"the VM is gone: {self._dead}", AgentError)
        with self._send_lock:
            try:
                self._chan.sendall(data)
            except OSError as err:
                raise self.machine.error(f"cannot write to the agent: {err}", AgentError) from None

    def request(self, msg: P._Message, timeout: float = REQUEST_TIMEOUT) -> P.Response:
        with self._lock:
            req_id = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            pending = self._pending[req_id] = _Pending()
        try:
            self._send(P.encode_message(P.Kind.REQUEST, req_id, msg))
            if not pending.done.wait(timeout):
                raise self.machine.error(f"the agent did not answer {msg.TYPE} in {timeout:.0f}s", AgentError)
            if pending.response is None:
                raise self.machine.error(f"the VM is gone: {self._dead}", AgentError)
            return pending.response
        finally:
            with self._lock:
                self._pending.pop(req_id, None)

    def _ok(self, msg: P._Message, timeout: float = REQUEST_TIMEOUT) -> P.Response:
        resp = self.request(msg, timeout)
        if not resp.ok:
            if resp.status is not None:
                raise ProcessStartError(resp.error, resp.status)
            raise ContainerError(f"{msg.TYPE}: {resp.error}")
        return resp

    @property
    def qemu_pid(self) -> int:
        return self.machine.pid

    def ping(self) -> None:
        self._ok(P.Ping())

    def create_container(self, bundle: Bundle) -> None:
        self._ok(P.CreateContainer(container_spec(bundle)))

    def start_container(self) -> None:
        self._ok(P.StartContainer())

    def exec_process(self, exec_id: str, process: Process) -> None:
        self._ok(P.ExecProcess(exec_id, process_spec(process)))

    def signal(self, exec_id: str, signum: int) -> None:
        self._ok(P.SignalProcess(exec_id, int(signum)))

    def write_stdin(self, exec_id: str, data: bytes) -> None:
        for i in range(0, len(data), P.MAX_DATA):
            self._send(P.encode_data(P.Kind.STDIN, exec_id, data[i : i + P.MAX_DATA]))

    def close_stdin(self, exec_id: str) -> None:
        self._ok(P.CloseStdin(exec_id))

    def resize(self, exec_id: str, rows: int, cols: int) -> None:
        self._ok(P.ResizeTty(exec_id, rows, cols))

    def ps(self) -> list[int]:
        return list(self._ok(P.ListProcesses()).pids)

    def pause(self) -> None:
        self.machine.command("stop")

    def resume(self) -> None:
        self.machine.command("cont")

    def guest_info(self, marker_inverted: str = "") -> dict[str, str]:
        """The agent's GuestInfo: its kernel's memory-encryption line and inverted canary."""
        return dict(self._ok(P.GuestInfo(marker_inverted)).info)

    def canary(self, marker_inverted: str | None) -> str:
        """The guest's memory canary, inverted (see ``sevbox verify-memory``)."""
        return self.guest_info(marker_inverted or "")["canary_inverted"]

    def qmp(self, command: str, arguments: dict[str, Any] | None) -> Any:
        """Run one QMP command on this VM's QEMU (qemu.qmp); QEMU's errors become VmError."""
        return self.machine.command(command, **(arguments or {}))

    @property
    def annotations(self) -> dict[str, str]:
        """What the runtime records about this sandbox in the container's state."""
        out = {"sevbox.accel": self.accel}
        if self.awaiting_launch:
            out["sevbox.attestation"] = "pre-launch: launched paused (-S) for the owner to measure and inject"
            return out
        try:
            info = self.guest_info()
        except SevboxError as err:
            out["sevbox.guest.memory-encryption"] = f"unknown ({err})"
            return out
        out["sevbox.guest.memory-encryption"] = info.get("memory_encryption", "unknown")
        raw = info.get("sev_status", "")
        try:
            from sevbox.host.msr import decode_sev_status

            out["sevbox.guest.sev-status"] = decode_sev_status(int(raw, 16)).describe()
        except ValueError:
            out["sevbox.guest.sev-status"] = raw or "unknown"
        return out

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the agent channel (for tests that feed the agent garbage)."""
        self._send(data)

    # -- events --
    def fileno(self) -> int:
        return self._wake_r

    def events(self) -> list[Event]:
        """Pending events, without blocking. Raises AgentError once the VM is gone and all events
        that arrived before were taken."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            out = list(self._events)
            self._events.clear()
        if not out and self._dead is not None:
            raise self.machine.error(f"the VM is gone: {self._dead}", AgentError)
        return out

    def requeue(self, events: list[Event]) -> None:
        """Put events back in front of the queue (for a consumer that took more than it handles)."""
        if events:
            with self._lock:
                self._events.extendleft(reversed(events))
            self._wake()

    # -- the end --
    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask the agent to power off; after ``timeout`` QMP quit, then SIGKILL. Then close()."""
        try:
            if self.machine.is_running() and self._dead is None:
                with contextlib.suppress(VmError, ContainerError):
                    self.request(P.Shutdown(), timeout=min(timeout, 5.0))
                self.machine.wait(timeout)
            if self.machine.is_running():
                self.machine.shutdown(timeout=2.0)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.machine.close()
        finally:
            with contextlib.suppress(OSError):
                self._chan.shutdown(socket.SHUT_RDWR)
            self._reader.join(5.0)
            self._chan.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- relay -----------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                return False
            raise
        view = view[n:]
    return True


def _winsize(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def relay(  # noqa: PLR0917 (the lead's agreed signature)
    sb: Sandbox,
    exec_id: str,
    stdin_fd: int | None,
    stdout_fd: int,
    stderr_fd: int,
    tty_fd: int | None = None,
    *,
    forward_signals: bool = True,
) -> int:
    """Pump stdio both ways until the process ``exec_id`` exits; return its status as runc reports
    it. EOF on ``stdin_fd`` closes the process's stdin. With ``tty_fd`` (a terminal), its window
    size is passed on when it changes. In the main thread, SIGINT/TERM/HUP/QUIT/USR1/USR2 sent to us
    are forwarded to the process. Events of other processes seen meanwhile are put back in the
    sandbox's queue (``requeue``) when relay returns."""
    sig_r = sig_w = -1
    old: dict[int, Any] = {}
    if forward_signals and threading.current_thread() is threading.main_thread():
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        for s in FORWARDED_SIGNALS:
            old[s] = signal.signal(s, lambda *_: None)
    stdin_open = stdin_fd is not None
    out_ok = {"stdout": True, "stderr": True}
    others: list[Event] = []
    size = _winsize(tty_fd) if tty_fd is not None else None
    if size is not None and size != (0, 0):  # (0, 0): a fresh pty nobody sized; keep consoleSize
        with contextlib.suppress(ContainerError):
            sb.resize(exec_id, *size)
    try:
        while True:
            rlist = [sb.fileno()]
            if stdin_open and stdin_fd is not None:
                rlist.append(stdin_fd)
            if sig_r >= 0:
                rlist.append(sig_r)
            try:
                ready, _, _ = select.select(rlist, [], [], 0.5 if tty_fd is not None else None)
            except InterruptedError:
                ready = []
            if sig_r in ready:
                with contextlib.suppress(BlockingIOError):
                    for signum in os.read(sig_r, 64):
                        if signum in FORWARDED_SIGNALS:
                            with contextlib.suppress(ContainerError):
                                sb.signal(exec_id, signum)
            if tty_fd is not None:
                new = _winsize(tty_fd)
                if new is not None and new not in (size, (0, 0)):
                    size = new
                    with contextlib.suppress(ContainerError):
                        sb.resize(exec_id, *new)
            if stdin_fd is not None and stdin_fd in ready:
                try:
                    data = os.read(stdin_fd, P.MAX_DATA)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    stdin_open = False
                    with contextlib.suppress(ContainerError):
                        sb.close_stdin(exec_id)
                elif data:
                    sb.write_stdin(exec_id, data)
            if sb.fileno() in ready:
                batch = sb.events()
                for i, ev in enumerate(batch):
                    if isinstance(ev, Output) and ev.exec_id == exec_id:
                        fd = stdout_fd if ev.stream == "stdout" else stderr_fd
                        if out_ok[ev.stream]:
                            out_ok[ev.stream] = _write_all(fd, ev.data)
                    elif isinstance(ev, Exited) and ev.exec_id == exec_id:
                        others += batch[i + 1 :]
                        return ev.status
                    else:
                        others.append(ev)
    finally:
        sb.requeue(others)
        if sig_r >= 0:
            for signum_, handler in old.items():
                signal.signal(signum_, handler)
            signal.set_wakeup_fd(old_wakeup)
            os.close(sig_r)
            os.close(sig_w)
