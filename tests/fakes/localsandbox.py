"""FAKE: a Sandbox that runs the container's processes as plain host processes (no VM).

It stands at exactly the Sandbox boundary (``sevbox.sandbox.Sandbox``'s interface) so that the runc
verbs, the monitor and the exec proxy can be tested quickly and deterministically; the real VM path
is tested in tests/vm. It never claims any isolation or encryption.
"""

from __future__ import annotations

import mmap
import os
import queue
import secrets
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sevbox.errors import SevboxError
from sevbox.sandbox import ProcessStartError


@dataclass
class Output:
    exec_id: str
    stream: str
    data: bytes


@dataclass
class Exited:
    exec_id: str
    status: int


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class LocalSandbox:
    """Runs ``process.args`` with ``process.env`` and ``process.cwd`` (relative to the rootfs when it
    exists there, else the host's), without chroot: fake isolation, real processes and pipes."""

    annotations: ClassVar[dict[str, str]] = {"sevbox.sandbox": "fake-local"}

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.qemu_pid = os.getpid()  # no QEMU: the monitor itself stands in
        self._events: queue.Queue[Any] = queue.Queue()
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._init: Any = None
        self.paused = False
        self.awaiting_launch = False
        self._canary: bytes | None = None
        self._ram: mmap.mmap | None = None

    @classmethod
    def launch(
        cls, *, rootfs: Path, name: str, log_dir: Path | None = None, paused: bool = False, **_: Any
    ) -> LocalSandbox:
        del name, log_dir
        sb = cls(Path(rootfs))
        sb.awaiting_launch = paused
        sb.annotations = {**cls.annotations, "sevbox.fake.launched-paused": str(paused).lower()}
        return sb

    def finish_launch(self, timeout: float = 0.0) -> None:
        if not self.awaiting_launch:
            raise SevboxError("the VM was not launched paused")
        self.awaiting_launch = False

    def create_container(self, bundle: Any) -> None:
        self._init = bundle.process

    def _spawn(self, exec_id: str, process: Any) -> None:
        args = list(process.args)
        env = dict(e.split("=", 1) for e in (process.env or []))
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        try:
            p = subprocess.Popen(
                args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
        except OSError as err:  # as the real Sandbox: the process can't start, with runc's status
            raise ProcessStartError(f"exec {args[0]}: {err.strerror}", 127) from None
        self._procs[exec_id] = p
        threads = [
            threading.Thread(target=self._pump, args=(exec_id, "stdout", p.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(exec_id, "stderr", p.stderr), daemon=True),
        ]
        for t in threads:
            t.start()
        threading.Thread(target=self._reap, args=(exec_id, p, threads), daemon=True).start()

    def _pump(self, exec_id: str, stream: str, f: Any) -> None:
        while chunk := f.read1(65536):
            self._push(Output(exec_id, stream, chunk))

    def _reap(self, exec_id: str, p: subprocess.Popen[bytes], threads: list[threading.Thread]) -> None:
        code = p.wait()
        for t in threads:
            t.join()
        self._push(Exited(exec_id, _status(code)))

    def _push(self, ev: Any) -> None:
        self._events.put(ev)
        try:
            os.write(self._w, b"!")
        except BlockingIOError:
            pass

    def start_container(self) -> None:
        self._spawn("", self._init)

    def exec_process(self, exec_id: str, process: Any) -> None:
        self._spawn(exec_id, process)

    def signal(self, exec_id: str, signum: int) -> None:
        p = self._procs.get(exec_id)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signum)

    def write_stdin(self, exec_id: str, data: bytes) -> None:
        p = self._procs[exec_id]
        assert p.stdin is not None
        try:
            p.stdin.write(data)
            p.stdin.flush()
        except BrokenPipeError:
            pass

    def close_stdin(self, exec_id: str) -> None:
        p = self._procs.get(exec_id)
        if p is not None and p.stdin is not None:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass

    def resize(self, exec_id: str, rows: int, cols: int) -> None:
        self._push(Output(exec_id, "stdout", f"[resize {rows}x{cols}]".encode()))

    def ps(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.poll() is None]

    def pause(self) -> None:
        self.paused = True
        for p in self._procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGSTOP)

    def resume(self) -> None:
        self.paused = False
        for p in self._procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)

    def fileno(self) -> int:
        return self._r

    def events(self) -> list[Any]:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def canary(self, marker_inverted: str | None) -> str:
        """Like the agent: keep C (and the marker) in plaintext memory, hand out only ~C."""
        if self._canary is None:
            self._ram = mmap.mmap(-1, 4 << 20)  # stands in for guest RAM, as unencrypted as TCG's
            self._canary = secrets.token_bytes(32)
            self._ram[1 << 20 : (1 << 20) + 32] = self._canary
        if marker_inverted:
            marker = bytes(b ^ 0xFF for b in bytes.fromhex(marker_inverted))
            self._ram[2 << 20 : (2 << 20) + len(marker)] = marker
        return bytes(b ^ 0xFF for b in self._canary).hex()

    def qmp(self, command: str, arguments: dict[str, Any] | None) -> Any:
        table = os.environ.get(FAKE_QMP_ENV)
        if not table:
            raise SevboxError(f"qmp {command}: the fake local sandbox has no QEMU")
        return FakeQmpTable(Path(table)).answer(command, arguments)

    def shutdown(self, timeout: float = 5.0) -> None:
        for p in self._procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout)


FAKE_QMP_ENV = "SEVBOX_TEST_FAKE_QMP"


class FakeQmpTable:
    """FAKE QMP answers for the fake sandbox, when a test asks (env SEVBOX_TEST_FAKE_QMP names a JSON
    file ``{"replies": {command: return value}, "errors": {command: GenericError desc}}``).

    Like :class:`tests.fakes.fakeqmp.FakeQmpServer`, but at the Sandbox.qmp boundary (the monitor is
    another process): an error comes out as QEMU's does through ``Machine.command`` (a VmError naming
    the command and QEMU's description). Every command is appended to ``<file>.log`` (one JSON object
    a line) so the test can see what was run; ``cont`` makes ``query-status`` report running.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def answer(self, command: str, arguments: dict[str, Any] | None) -> Any:
        import json

        from sevbox.errors import VmError

        table = json.loads(self.path.read_text())
        with open(f"{self.path}.log", "a") as log:
            log.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        errors, replies = table.get("errors", {}), table.get("replies", {})
        if command in errors:
            raise VmError(f"QMP {command} failed: {errors[command]}")
        if command == "cont":
            replies["query-status"] = {"running": True, "singlestep": False, "status": "running"}
            self.path.write_text(json.dumps({**table, "replies": replies}))
            return {}
        if command not in replies:
            raise VmError(f"QMP {command} failed: The command {command} has not been found")
        return replies[command]
