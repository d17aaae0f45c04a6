"""A container's lifecycle, as the runc verbs drive it: create, start, state, kill, exec, delete...

The CLI verbs are thin; the work is here. State lives in the store (see ``store``), the running
container in its monitor process (see ``monitor``), reached over the control socket (``control``).
Status is derived from reality: a container whose monitor has gone is ``stopped``, whatever its
files last said.
"""

from __future__ import annotations

import array
import contextlib
import datetime
import importlib
import json
import logging
import os
import signal
import socket
import sys
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevbox.errors import ContainerError, NotFoundError, SevboxError, StateError
from sevbox.runtime import control, hooks, procs
from sevbox.runtime.ids import validate_id
from sevbox.runtime.store import Store, atomic_write

__all__ = ["OCI_VERSION", "Container", "ExecRequest", "parse_signal", "send_console"]

log = logging.getLogger(__name__)

OCI_VERSION = "1.2.0"
LIVE = ("created", "running", "paused")
ATTESTATION_ANNOTATION = "sevbox.attestation"  # "pre-launch": launch paused, measure, inject, then run


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_signal(text: str) -> int:
    """runc's forms: a number ("15"), a name ("TERM", "SIGTERM"), any case."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        if 0 < n < signal.NSIG:
            return n
        raise ContainerError(f"invalid signal {text!r}")
    name = t.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ContainerError(f"unknown signal {text!r}") from None


def send_console(socket_path: str, master_fd: int) -> None:
    """Hand the pty master to the caller over --console-socket (SCM_RIGHTS), as runc does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path)
        sock.sendmsg(
            [b"/dev/ptmx"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master_fd]).tobytes())],
        )
    except OSError as err:
        raise ContainerError(f"cannot send the console to {socket_path}: {err.strerror}") from None
    finally:
        sock.close()


def _write_pid_file(path: str, pid: int) -> None:
    """Digits only, no newline (containerd refuses a newline), written atomically."""
    p = Path(path)
    if not p.is_absolute():
        p = Path.cwd() / p
    try:
        atomic_write(p, str(pid).encode())
    except OSError as err:
        raise ContainerError(f"cannot write pid file {path}: {err.strerror}") from None


def _load_sandbox_factory() -> Any:
    spec = os.environ.get("SEVBOX_TEST_SANDBOX")  # tests place a fake at the Sandbox boundary
    if spec:
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)
    from sevbox.sandbox import Sandbox

    return Sandbox


@dataclass(frozen=True)
class ExecRequest:
    process: dict[str, Any]  # an OCI process object
    detach: bool = False
    pid_file: str | None = None
    console_socket: str | None = None


class Container:
    def __init__(self, store: Store, container_id: str) -> None:
        self.store = store
        self.id = validate_id(container_id)
        self.dir = store.dir(container_id)

    # ---- reading state
    @classmethod
    def load(cls, store: Store, container_id: str) -> Container:
        c = cls(store, container_id)
        if not store.exists(container_id):
            raise NotFoundError(container_id)
        return c

    def record(self) -> dict[str, Any]:
        return self.store.read_json(self.id, "state.json")

    def status(self, record: Mapping[str, Any] | None = None) -> str:
        rec = record if record is not None else self.record()
        pid = rec.get("pid")
        if not pid:
            creator = rec.get("creator")
            if creator and procs.alive(creator[0], creator[1]):
                return "creating"
            return "stopped"
        if not procs.alive(pid, rec.get("pid_start")):
            return "stopped"
        st = self.store.read_json(self.id, "status").get("status")
        return st if st in (*LIVE, "stopped") else "created"

    def state(self) -> dict[str, Any]:
        rec = self.record()
        status = self.status(rec)
        return {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": (rec.get("pid") or 0) if status != "stopped" else 0,
            "bundle": rec.get("bundle", ""),
            "created": rec.get("created", ""),
            "annotations": rec.get("annotations", {}),
        }

    def _require(self, verb: str, allowed: tuple[str, ...]) -> str:
        status = self.status()
        if status not in allowed:
            if status == "stopped" and "stopped" not in allowed:
                raise StateError(f"cannot {verb} container {self.id}: container not running",
                                 status=status, required=allowed)  # fmt: skip
            raise StateError(
                f"cannot {verb} container {self.id}: it is {status}, not {' or '.join(allowed)}",
                status=status,
                required=allowed,
            )
        return status

    def channel(self) -> control.Channel:
        try:
            return control.connect(self.dir / "monitor.sock")
        except OSError as err:
            raise ContainerError(f"container {self.id}: monitor unreachable ({err.strerror})") from None

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        ch = self.channel()
        try:
            return ch.request(message)
        except OSError as err:
            raise ContainerError(f"container {self.id}: monitor failed ({err})") from None
        finally:
            ch.close()

    # ---- create
    @classmethod
    def create(
        cls,
        store: Store,
        container_id: str,
        bundle_dir: str,
        *,
        pid_file: str | None = None,
        console_socket: str | None = None,
        config_path: str | None = None,
    ) -> Container:
        """Boot the VM, prepare the process, run the create hooks, write the pid file, return.

        The launch security is decided first, and a configuration the host can't honour fails
        here, before anything is started (see ``sevbox.launch``)."""
        from sevbox.config import load_config
        from sevbox.runtime.bundle import load_bundle
        from sevbox.runtime.vmplan import owner_session, plan_launch, sandbox_args
        from sevbox.sandbox import volumes

        validate_id(container_id)
        bundle_path = Path(bundle_dir).resolve()
        bundle = load_bundle(bundle_path)
        if bundle.process is None:
            raise ContainerError(f"bundle {bundle_path}: config.json has no process to run")
        terminal = bool(bundle.process.terminal)
        if terminal and not console_socket:
            raise ContainerError("process.terminal is true: --console-socket is required")
        if not terminal and console_socket:
            raise ContainerError("--console-socket given but process.terminal is false")
        config = load_config(config_path).with_annotations(bundle.annotations)
        plan = plan_launch(config)
        launch_args = sandbox_args(plan, config, owner_session(bundle.annotations, bundle_path))
        launch_args["readonly_rootfs"] = bundle.readonly
        launch_args["volumes"] = volumes(bundle)
        attestation = bundle.annotations.get(ATTESTATION_ANNOTATION)
        if attestation not in (None, "pre-launch"):
            raise ContainerError(
                f"annotation {ATTESTATION_ANNOTATION}={attestation!r}: the only value is 'pre-launch'"
            )
        if attestation == "pre-launch":
            launch_args["paused"] = True
        state_dir = store.create(container_id)
        c = cls(store, container_id)
        me = os.getpid()
        annotations = {**bundle.annotations, **plan.annotations()}
        store.write_json(container_id, "state.json", {
            "id": container_id, "bundle": str(bundle_path), "created": now_rfc3339(),
            "annotations": annotations, "creator": [me, procs.start_time(me)],
        })  # fmt: skip
        try:
            c._spawn_monitor(bundle, state_dir, console_socket, launch_args)
            state = c.state()
            for kind in ("createRuntime", "prestart", "createContainer"):
                hooks.run_hooks(bundle.hooks, kind, state, fatal=True)
            if pid_file:
                _write_pid_file(pid_file, int(state["pid"]))
        except BaseException:
            c.destroy()
            raise
        return c

    def _spawn_monitor(
        self,
        bundle: Any,
        state_dir: Path,
        console_socket: str | None,
        launch_args: dict[str, Any],
    ) -> None:
        listener = control.listen(state_dir / "monitor.sock")
        tty_master = tty_slave = None
        if bundle.process.terminal:
            tty_master, tty_slave = os.openpty()
            os.set_inheritable(tty_slave, False)
            tty.setraw(tty_slave)  # a clear channel: the guest's own pty does echo, CR/LF and ^C
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        factory = _load_sandbox_factory()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the monitor
            os.close(ready_r)
            if tty_master is not None:
                os.close(tty_master)
            _monitor_main(
                self,
                bundle=bundle,
                factory=factory,
                listener=listener,
                ready_w=ready_w,
                tty_slave=tty_slave,
                launch_args=launch_args,
            )
        listener.close()
        os.close(ready_w)
        if tty_slave is not None:
            os.close(tty_slave)
        try:
            with os.fdopen(ready_r, "rb") as f:
                raw = f.read()
            try:
                msg = json.loads(raw) if raw else {}
            except ValueError:
                msg = {}
            if not msg.get("ok"):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                raise ContainerError(msg.get("error") or self._monitor_failure())
            rec = self.record()
            rec.update(pid=pid, pid_start=procs.start_time(pid), qemu_pid=msg.get("qemu_pid"),
                       qemu_start=procs.start_time(msg.get("qemu_pid") or 0), creator=None)  # fmt: skip
            rec["annotations"].update(msg.get("annotations") or {})
            self.store.write_json(self.id, "state.json", rec)
            if tty_master is not None and console_socket:
                send_console(console_socket, tty_master)
        finally:
            if tty_master is not None:
                os.close(tty_master)

    def _monitor_failure(self) -> str:
        try:
            lines = (self.dir / "monitor.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return f"container {self.id}: the monitor died while creating" + (f": {lines[-1]}" if lines else "")

    # ---- verbs
    def start(self) -> None:
        with self.store.lock(self.id):
            self._require("start", ("created",))
            self.ask({"op": "start"})
        bundle = self._bundle_hooks()
        hooks.run_hooks(bundle, "poststart", self.state(), fatal=False)

    def kill(self, sig: int, *, all_processes: bool = False) -> None:
        self._require("kill", LIVE)
        try:
            self.ask({"op": "kill", "signal": sig, "all": all_processes})
        except ContainerError:
            if self.status() == "stopped":
                raise StateError(f"cannot kill container {self.id}: container not running",
                                 status="stopped") from None  # fmt: skip
            raise

    def ps(self) -> list[int]:
        self._require("ps", LIVE)
        pids = self.ask({"op": "ps"}).get("pids", [])
        return [int(p) for p in pids]

    def pause(self) -> None:
        with self.store.lock(self.id):
            self._require("pause", ("running",))
            self.ask({"op": "pause"})

    def resume(self) -> None:
        with self.store.lock(self.id):
            self._require("resume", ("paused",))
            self.ask({"op": "resume"})

    def delete(self, *, force: bool = False) -> None:
        with self.store.lock(self.id):
            status = self.status()
            if status != "stopped" and not force:
                raise StateError(
                    f"cannot delete container {self.id} that is not stopped: {status}",
                    status=status,
                    required=("stopped",),
                )
            state = self.state()
            self.destroy()
        hooks_ = self._bundle_hooks(state.get("bundle"))
        state["status"] = "stopped"
        hooks.run_hooks(hooks_, "poststop", state, fatal=False)

    def destroy(self) -> None:
        """Stop everything this container has on the host and remove its state (never raises)."""
        try:
            rec = self.record()
        except SevboxError:
            rec = {}
        pid, pid_start = rec.get("pid"), rec.get("pid_start")
        if procs.alive(pid, pid_start):
            with contextlib.suppress(SevboxError, OSError):
                ch = control.connect(self.dir / "monitor.sock", timeout=1.0)
                try:
                    ch.request({"op": "shutdown"})
                finally:
                    ch.close()
            deadline = time.monotonic() + 2.0
            while procs.alive(pid, pid_start) and time.monotonic() < deadline:
                time.sleep(0.02)
            procs.kill_verified(pid, pid_start, signal.SIGKILL, wait=1.0)
        procs.kill_verified(rec.get("qemu_pid"), rec.get("qemu_start"), signal.SIGKILL, wait=1.0)
        self.store.remove(self.id)

    def _bundle_hooks(self, bundle_dir: str | None = None) -> Any:
        path = Path(bundle_dir or self.record().get("bundle", "")) / "config.json"
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return config.get("hooks") if isinstance(config, dict) else None

    # ---- exec
    def exec(self, req: ExecRequest) -> int:
        """Run a process in the container. Detached: return 0 once it runs (pid file = its proxy).
        Attached: relay until it exits and return its status."""
        self._require("exec", ("running",))
        from sevbox.runtime import execproxy

        return execproxy.run(self, req)


def _monitor_main(
    c: Container,
    *,
    bundle: Any,
    factory: Any,
    listener: socket.socket,
    ready_w: int,
    tty_slave: int | None,
    launch_args: dict[str, Any],
) -> None:
    """The forked monitor process. Never returns."""
    import fcntl
    import termios

    from sevbox.runtime.bundle import parse_process
    from sevbox.runtime.monitor import Monitor, exit_like

    status = 1
    try:
        os.setsid()
        logging.getLogger("sevbox").handlers.clear()
        handler = logging.FileHandler(c.dir / "monitor.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("sevbox")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        devnull = os.open(os.devnull, os.O_RDWR)
        if tty_slave is not None:
            # the pty is the container's stdio; don't keep the caller's pipes open
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            with contextlib.suppress(OSError):
                fcntl.ioctl(tty_slave, termios.TIOCSCTTY, 0)
        os.close(devnull)
        try:
            sb = factory.launch(rootfs=bundle.rootfs, name=c.id, log_dir=c.dir, **launch_args)
            if not launch_args.get("paused"):
                sb.create_container(bundle)
        except SevboxError as err:
            logging.getLogger(__name__).error("%s", err)
            os.write(ready_w, json.dumps({"ok": False, "error": str(err)}).encode())
            os._exit(1)
        annotations = dict(getattr(sb, "annotations", {}) or {})
        monitor = Monitor(
            sandbox=sb,
            listener=listener,
            write_status=lambda v: c.store.write_json(c.id, "status", v),
            parse_process=parse_process,
            init_stdio=(0, 1, 2),
            init_tty=tty_slave,
            pending_bundle=bundle if launch_args.get("paused") else None,
        )
        c.store.write_json(c.id, "status", {"status": monitor.status, "exit": None})
        os.write(
            ready_w, json.dumps({"ok": True, "qemu_pid": sb.qemu_pid, "annotations": annotations}).encode()
        )
        os.close(ready_w)
        status = monitor.serve()
    except BaseException as err:  # the monitor must never unwind into the CLI's code
        with contextlib.suppress(Exception):
            logging.getLogger(__name__).exception("monitor failed: %s", err)
        with contextlib.suppress(OSError):
            os.write(ready_w, json.dumps({"ok": False, "error": f"monitor failed: {err}"}).encode())
        os._exit(1)
    exit_like(status)
    os._exit(status & 0xFF)
