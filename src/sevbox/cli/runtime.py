"""The runc verbs: thin wrappers over ``sevbox.runtime.container.Container``.

Global flags (``--root``, ``--log``, ``--log-format``) come before the verb, as containerd's go-runc
passes them. Errors go to stderr and, with ``--log FILE --log-format json``, into that file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sevbox import __version__
from sevbox.errors import BundleError, ContainerError, UsageError

__all__ = ["configure"]

_EPILOGS = {
    "create": "example: sevbox --root /run/sevbox create --bundle ./bundle --pid-file /tmp/c1.pid c1",
    "kill": "SIGNAL is a number (15) or a name (TERM, SIGTERM); default TERM.",
    "exec": "examples:\n  sevbox exec c1 ls -l /\n  sevbox exec -p proc.json --detach --pid-file p.pid c1",
    "delete": "--force stops a created or running container first; it succeeds if the container is gone.",
    "update": "A VM's memory and vCPUs are fixed when it boots: changes are refused with a clear error.",
    "pause": "Pausing stops the VM's vCPUs (QMP stop); the processes inside see no signal.",
}


def _id(p: argparse.ArgumentParser) -> None:
    p.add_argument("container_id", metavar="ID", help="container id")


def configure(verb: str, p: argparse.ArgumentParser) -> None:
    p.epilog = _EPILOGS.get(verb)
    if verb == "create":
        p.add_argument("--bundle", "-b", default=".", help="bundle directory (default: current directory)")
        p.add_argument("--pid-file", help="write the monitor's pid here (digits, no newline)")
        p.add_argument("--console-socket", help="unix socket to receive the pty master (process.terminal)")
        p.add_argument("--no-pivot", action="store_true", help="accepted (the guest always uses chroot)")
        p.add_argument("--no-new-keyring", action="store_true", help="accepted (no host keyring is used)")
        p.add_argument("--preserve-fds", type=int, default=0, help="must be 0: host fds can't enter a VM")
        p.add_argument("--pidfd-socket", help="not supported (the pid names a host proxy, not a pidfd)")
        _id(p)
        p.set_defaults(handler=_create)
    elif verb in ("start", "pause", "resume", "state"):
        _id(p)
        p.set_defaults(handler={"start": _start, "pause": _pause, "resume": _resume, "state": _state}[verb])
    elif verb == "kill":
        p.add_argument("--all", "-a", action="store_true", help="signal every process in the container")
        _id(p)
        p.add_argument("signal", nargs="?", default="TERM", help="signal (default TERM)")
        p.set_defaults(handler=_kill)
    elif verb == "delete":
        p.add_argument("--force", "-f", action="store_true", help="stop the container first if it runs")
        _id(p)
        p.set_defaults(handler=_delete)
    elif verb == "exec":
        p.add_argument("--process", "-p", help="OCI process JSON file (replaces ARGS and the flags below)")
        p.add_argument("--tty", "-t", action="store_true", help="allocate a terminal")
        p.add_argument("--cwd", help="working directory in the container")
        p.add_argument("--env", "-e", action="append", default=[], metavar="K=V", help="set an env variable")
        p.add_argument("--user", "-u", help="UID[:GID] to run as")
        p.add_argument("--additional-gids", "-g", action="append", default=[], help="extra group id")
        p.add_argument("--no-new-privs", action="store_true", help="set no_new_privileges")
        p.add_argument("--detach", "-d", action="store_true", help="return once the process runs")
        p.add_argument("--pid-file", help="write the exec proxy's pid here")
        p.add_argument("--console-socket", help="unix socket to receive the pty master")
        p.add_argument("--preserve-fds", type=int, default=0, help="must be 0")
        p.add_argument("--ignore-paused", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("--cap", "-c", action="append", default=[], help="add a capability")
        _id(p)
        p.add_argument("args", nargs=argparse.REMAINDER, help="command and arguments")
        p.set_defaults(handler=_exec)
    elif verb == "ps":
        p.add_argument("--format", "-f", choices=("table", "json"), default="table")
        _id(p)
        p.add_argument("ps_args", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(handler=_ps)
    elif verb == "list":
        p.add_argument("--format", "-f", choices=("table", "json"), default="table")
        p.add_argument("--quiet", "-q", action="store_true", help="print ids only")
        p.set_defaults(handler=_list)
    elif verb == "update":
        p.add_argument("--resources", "-r", help="resources JSON file, or - for stdin")
        for flag in (
            "--memory",
            "--cpu-quota",
            "--cpu-period",
            "--cpu-shares",
            "--pids-limit",
            "--cpuset-cpus",
        ):
            p.add_argument(flag, help=argparse.SUPPRESS)
        _id(p)
        p.set_defaults(handler=_update)
    elif verb == "events":
        p.add_argument("--stats", action="store_true", help="print stats once and exit")
        p.add_argument("--interval", default="5s", help="stats interval (e.g. 5s, 500ms)")
        _id(p)
        p.set_defaults(handler=_events)
    elif verb == "features":
        p.set_defaults(handler=_features)
    elif verb == "spec":
        p.add_argument("--bundle", "-b", default=".", help="where to write config.json")
        p.add_argument("--rootless", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(handler=_spec)


def _store(args: argparse.Namespace) -> Any:
    from sevbox.runtime.store import Store

    return Store(args.root)


def _load(args: argparse.Namespace) -> Any:
    from sevbox.runtime.container import Container

    return Container.load(_store(args), args.container_id)


def _create(args: argparse.Namespace) -> int:
    from sevbox.runtime.container import Container

    if args.preserve_fds:
        raise UsageError("--preserve-fds: host file descriptors cannot be passed into a VM")
    if args.pidfd_socket:
        raise UsageError("--pidfd-socket is not supported (the pid file names a host proxy process)")
    Container.create(
        _store(args),
        args.container_id,
        args.bundle,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        config_path=args.config,
    )
    return 0


def _start(args: argparse.Namespace) -> int:
    _load(args).start()
    return 0


def _pause(args: argparse.Namespace) -> int:
    _load(args).pause()
    return 0


def _resume(args: argparse.Namespace) -> int:
    _load(args).resume()
    return 0


def _state(args: argparse.Namespace) -> int:
    print(json.dumps(_load(args).state(), indent=2))
    return 0


def _kill(args: argparse.Namespace) -> int:
    from sevbox.runtime.container import parse_signal

    sig = parse_signal(args.signal)
    _load(args).kill(sig, all_processes=args.all)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from sevbox.errors import NotFoundError
    from sevbox.runtime.container import Container

    store = _store(args)
    try:
        c = Container.load(store, args.container_id)
    except NotFoundError:
        if args.force:
            store.remove(args.container_id)  # a half-made container may have left a directory
            return 0
        raise
    c.delete(force=args.force)
    return 0


def _read_json_file(path: str, what: str) -> Any:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError as err:
        raise UsageError(f"{what} {path} is not valid JSON: {err}") from None


def _exec_process(args: argparse.Namespace, container: Any) -> dict[str, Any]:
    if args.process:
        from_file = _read_json_file(args.process, "process file")
        if not isinstance(from_file, dict):
            raise UsageError(f"process file {args.process} must hold a JSON object")
        return from_file
    if not args.args:
        raise UsageError("exec needs a command (ARGS) or --process FILE")
    try:
        config = json.loads((Path(container.record()["bundle"]) / "config.json").read_text())
        template = dict(config.get("process") or {})
    except (OSError, ValueError, KeyError):
        template = {}
    process: dict[str, Any] = {k: v for k, v in template.items() if k in ("env", "cwd", "user", "rlimits")}
    process["args"] = list(args.args[1:] if args.args[0] == "--" else args.args)
    if not process["args"]:
        raise UsageError("exec needs a command")
    process["terminal"] = bool(args.tty)
    if args.env:
        bad = [e for e in args.env if "=" not in e]
        if bad:
            raise UsageError(f"--env needs KEY=VALUE, not {bad[0]!r}")
        process["env"] = list(process.get("env") or []) + list(args.env)
    if args.cwd:
        process["cwd"] = args.cwd
    process.setdefault("cwd", "/")
    if args.user:
        uid, _, gid = args.user.partition(":")
        try:
            user: dict[str, Any] = {"uid": int(uid), "gid": int(gid) if gid else 0}
        except ValueError:
            raise UsageError(f"--user takes numeric UID[:GID], not {args.user!r}") from None
        process["user"] = user
    if args.additional_gids:
        try:
            process.setdefault("user", {"uid": 0, "gid": 0})["additionalGids"] = [
                int(g) for g in args.additional_gids
            ]
        except ValueError:
            raise UsageError("--additional-gids takes numbers") from None
    if args.no_new_privs:
        process["noNewPrivileges"] = True
    return process


def _exec(args: argparse.Namespace) -> int:
    from sevbox.runtime.container import ExecRequest

    if args.preserve_fds:
        raise UsageError("--preserve-fds: host file descriptors cannot be passed into a VM")
    c = _load(args)
    process = _exec_process(args, c)
    if process.get("terminal") and args.detach and not args.console_socket:
        raise UsageError("exec --tty --detach needs --console-socket")
    status = c.exec(
        ExecRequest(
            process=process, detach=args.detach, pid_file=args.pid_file, console_socket=args.console_socket
        )
    )
    if args.detach:
        return 0
    from sevbox.runtime.monitor import exit_like

    sys.stdout.flush()
    exit_like(status)
    return int(status)


def _ps(args: argparse.Namespace) -> int:
    pids = _load(args).ps()
    if args.format == "json":
        print(json.dumps(pids))
    else:
        print("PID")
        for pid in pids:
            print(pid)
    return 0


def _list(args: argparse.Namespace) -> int:
    from sevbox.errors import SevboxError
    from sevbox.runtime.container import Container

    store = _store(args)
    states = []
    for cid in store.ids():
        try:
            states.append(Container(store, cid).state())
        except SevboxError:
            continue
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        print(json.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"]) for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("   ".join(r[i].ljust(widths[i]) for i in range(4)) + "   " + r[4])
    return 0


def _update(args: argparse.Namespace) -> int:
    c = _load(args)
    if args.resources:
        resources = _read_json_file(args.resources, "resources")
        if not isinstance(resources, dict):
            raise UsageError("resources must be a JSON object")
    c._require("update", ("created", "running", "paused"))
    raise ContainerError(
        "update: a VM's memory and vCPUs are fixed when it boots; sevbox does not change them "
        "(recreate the container with new limits)"
    )


def _parse_interval(text: str) -> float:
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * scale
            except ValueError:
                break
            if value > 0:
                return value
            break
    raise UsageError(f"bad --interval {text!r} (e.g. 5s, 500ms)")


def _stats(c: Any) -> dict[str, Any]:
    from sevbox.runtime import procs

    rec = c.record()
    data: dict[str, Any] = {}
    qemu = rec.get("qemu_pid")
    if procs.alive(qemu, rec.get("qemu_start")):
        try:
            fields = Path(f"/proc/{qemu}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            total_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // ticks
            rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            data = {"cpu": {"usage": {"total": total_ns}}, "memory": {"usage": {"usage": rss}}}
        except (OSError, IndexError, ValueError):
            data = {}
    return {"type": "stats", "id": c.id, "data": data}


def _events(args: argparse.Namespace) -> int:
    c = _load(args)
    interval = _parse_interval(args.interval)
    if args.stats:
        print(json.dumps(_stats(c)))
        return 0
    while c.status() != "stopped":
        print(json.dumps(_stats(c)), flush=True)
        time.sleep(interval)
    return 0


def _features(args: argparse.Namespace) -> int:
    from sevbox.runtime.hooks import HOOK_KINDS

    features = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [h for h in HOOK_KINDS if h != "startContainer"],
        "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "mode", "size"],
        "linux": {
            "namespaces": ["mount", "pid", "uts", "ipc", "network"],
            "capabilities": sorted(_capabilities()),
            "cgroup": {"v1": False, "v2": False, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {
            "io.github.sevbox.version": __version__,
            "io.github.sevbox.isolation": "vm",
        },
    }
    print(json.dumps(features, indent=2))
    return 0


def _capabilities() -> list[str]:
    names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
        "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
        "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
        "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
        "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
        "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    ]  # fmt: skip
    return ["CAP_" + n for n in names]


def default_spec() -> dict[str, Any]:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sevbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "annotations": {"sevbox.launch-security": "auto"},
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def _spec(args: argparse.Namespace) -> int:
    target = Path(args.bundle) / "config.json"
    if target.exists():
        raise BundleError(f"{target} already exists: remove it first")
    try:
        with open(target, "x") as f:
            json.dump(default_spec(), f, indent=2)
            f.write("\n")
    except OSError as err:
        raise BundleError(f"cannot write {target}: {err.strerror}") from None
    return 0
