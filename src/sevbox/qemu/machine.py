"""One QEMU process: launch with inherited sockets (QMP, agent channel), wait, shut down, clean up.

Discipline borrowed from ``qemu.machine``: QMP on a ``socketpair()`` fd (no socket path to race
on), one exception carrying exit code, command line and logs when launch fails, shutdown soft
(QMP ``quit``) then hard (SIGKILL), cleanup in ``finally``, ``close()`` idempotent, a context
manager. QEMU also gets PR_SET_PDEATHSIG=SIGKILL, so it dies with its parent even on SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from sevbox.errors import VmError
from sevbox.qemu.argv import VmSpec, build_argv

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

__all__ = ["Machine"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

PR_SET_PDEATHSIG = 1
QEMU = "qemu-system-x86_64"


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Machine:
    """A QEMU process for ``spec`` (whose ``qmp_fd``/``channel_fd``/``serial_log`` are filled in
    here). ``launch()`` returns the host end of the agent channel."""

    def __init__(self, spec: VmSpec, *, name: str = "vm", log_dir: Path | None = None, qemu: str = QEMU):
        self.name = name
        self._base_spec = spec
        self._qemu = qemu
        self._keep_logs = log_dir is not None
        self._log_dir = log_dir
        self._logfiles: list[BinaryIO] = []  # anonymous (unlinked) log files when no log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp_sock: socket.socket | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self.argv: list[str] = []
        self.spec: VmSpec = spec
        self.console_log: Path | None = None
        self.qemu_log: Path | None = None
        self.log = logging.getLogger(f"{__name__}.{name}")

    # -- lifecycle --
    def launch(self) -> socket.socket:
        if self._proc is not None:
            raise VmError("this machine was already launched")
        qmp_host = qmp_guest = chan_host = chan_guest = None
        try:
            extra_fds: tuple[int, ...] = ()
            if self._log_dir is not None:
                self._log_dir.mkdir(parents=True, exist_ok=True)
                self.console_log = self._log_dir / f"{self.name}.console.log"
                self.qemu_log = self._log_dir / f"{self.name}.qemu.log"
                errf: BinaryIO = open(self.qemu_log, "wb")  # noqa: SIM115 (closed below)
                self._logfiles.append(errf)
            else:
                # Unlinked files: nothing to clean up on disk, even if we are SIGKILLed.
                errf = tempfile.TemporaryFile()  # noqa: SIM115
                con = tempfile.TemporaryFile()  # noqa: SIM115
                self._logfiles += [errf, con]
                extra_fds = (con.fileno(),)
                self.console_log = Path(f"/proc/self/fd/{con.fileno()}")  # QEMU opens its inherited fd
            qmp_host, qmp_guest = socket.socketpair()
            chan_host, chan_guest = socket.socketpair()
            self.spec = dataclasses.replace(
                self._base_spec,
                qmp_fd=qmp_guest.fileno(),
                channel_fd=chan_guest.fileno(),
                serial_log=self.console_log,
            )
            self.argv = build_argv(self.spec, self._qemu)
            self.log.debug("launching: %s", " ".join(self.argv))
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=errf,
                stderr=errf,
                pass_fds=(qmp_guest.fileno(), chan_guest.fileno(), *extra_fds),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads of ours hold locks here)
            )
            self._qmp_sock = qmp_host
            qmp_host = None
            return_chan = chan_host
            chan_host = None
            return return_chan
        except FileNotFoundError as err:
            self.close()
            raise VmError(f"cannot run QEMU: {err}", argv=self.argv) from None
        except BaseException:
            self.close()
            raise
        finally:
            for s in (qmp_host, qmp_guest, chan_host, chan_guest):
                if s is not None:
                    s.close()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise VmError("the machine is not launched")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def logs(self) -> str:
        """QEMU's own messages and the tail of the guest console, for error reports."""
        out = []
        if self._log_dir is not None:
            sources = [
                (p.read_bytes() if p and p.exists() else b"") for p in (self.qemu_log, self.console_log)
            ]
        else:
            sources = []
            for f in self._logfiles:
                f.seek(0)
                sources.append(f.read())
        for blob, what in zip(sources, ("qemu", "console"), strict=False):
            text = blob[-4000:].decode(errors="replace").strip()
            if text:
                out.append(f"--- {what} ---\n{text}")
        return "\n".join(out)

    def error(self, message: str, cls: type[VmError] = VmError) -> VmError:
        return cls(message, argv=self.argv, returncode=self.returncode, log=self.logs())

    # -- QMP --
    def qmp(self) -> QEMUMonitorProtocol:
        """The QMP connection (qemu.qmp), opened on first use."""
        if self._qmp is None:
            if self._qmp_sock is None or not self.is_running():
                raise self.error("QEMU is not running")
            from qemu.qmp.legacy import QEMUMonitorProtocol

            q = QEMUMonitorProtocol(self._qmp_sock, nickname=self.name)
            q.settimeout(10.0)
            q.connect()
            self._qmp = q
        return self._qmp

    def command(self, cmd: str, **args: Any) -> Any:
        from qemu.qmp import QMPError

        try:
            return self.qmp().cmd(cmd, **args)
        except (QMPError, OSError, TimeoutError) as err:
            raise self.error(f"QMP {cmd} failed: {err}") from None

    # -- shutdown --
    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask QEMU to quit (QMP), wait up to ``timeout``; then SIGKILL. Then clean up."""
        try:
            if self.is_running():
                with contextlib.suppress(Exception):
                    self.qmp().cmd("quit")
                if self.wait(timeout) is None:
                    self.log.warning("QEMU did not quit within %.1fs; killing it", timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Kill QEMU if it still runs, reap it, close sockets, remove temp files. Idempotent."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None
        if self._qmp_sock is not None:
            self._qmp_sock.close()
            self._qmp_sock = None
        for f in self._logfiles:
            f.close()
        self._logfiles = []

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
