"""OCI bundles: ``config.json`` parsed and validated into frozen dataclasses.

Honoured: ``ociVersion`` 1.x, ``root`` (``path`` relative to the bundle, ``"."`` allowed;
``readonly``), ``hostname``, ``process`` (args, env, cwd, user uid/gid/additionalGids/umask,
terminal, consoleSize, rlimits, noNewPrivileges, capabilities), ``mounts`` (proc, sysfs, tmpfs,
devpts, mqueue, cgroup/cgroup2, and bind mounts whose source lies inside the rootfs),
``linux.maskedPaths``, ``linux.readonlyPaths``, ``linux.sysctl``.

Accepted and not applied, because the VM is the isolation boundary: ``linux.namespaces``,
``linux.resources``, ``linux.cgroupsPath``, ``linux.seccomp``, ``linux.devices``,
``linux.uidMappings``/``gidMappings``, ``process.apparmorProfile``/``selinuxLabel``/
``oomScoreAdj``, ``annotations``.

``hooks`` are shape-checked and handed to the runtime, which runs them on the host as runc does.

Refused with a BundleError naming the field: anything malformed; ``process.user.username``;
``windows``/``solaris``/``vm``; mount types and bind sources we cannot honour.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sevbox.errors import BundleError

__all__ = [
    "Bundle",
    "Mount",
    "Process",
    "Rlimit",
    "load_bundle",
    "parse_config",
    "parse_process",
]

RLIMITS = (
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
)  # fmt: skip
MOUNT_TYPES = ("proc", "sysfs", "tmpfs", "devpts", "mqueue", "bind", "cgroup", "cgroup2")
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class Rlimit:
    type: str
    hard: int
    soft: int


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (rows, cols)
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    capabilities: dict[str, tuple[str, ...]] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str
    source: str  # bind: path inside the rootfs; file: host file copied in; share: host directory
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bundle:
    path: Path  # the bundle directory (absolute)
    rootfs: Path  # the root filesystem directory (absolute)
    readonly: bool
    process: Process | None
    hostname: str = ""
    mounts: tuple[Mount, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict, hash=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    # Raw hook objects by kind, shape-checked; the runtime runs them on the host (runc's semantics).
    hooks: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict, hash=False)


# --- helpers ---------------------------------------------------------------------------------


def _err(where: str, msg: str) -> BundleError:
    return BundleError(f"config.json: {where}: {msg}")


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _err(where, "expected an object")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _err(where, "expected a string")
    if "\0" in v:
        raise _err(where, "contains a NUL character")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _err(where, "expected true or false")
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _err(where, "expected an integer")
    if not lo <= v <= hi:
        raise _err(where, f"{v} is out of range {lo}..{hi}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise _err(where, "expected a list")
    return v


def _strs(v: Any, where: str) -> tuple[str, ...]:
    return tuple(_str(x, f"{where}[{i}]") for i, x in enumerate(_list(v, where)))


def _abs(v: Any, where: str) -> str:
    s = _str(v, where)
    if not s.startswith("/"):
        raise _err(where, f"{s!r} is not an absolute path")
    if ".." in s.split("/"):
        raise _err(where, f"{s!r} contains '..'")
    return s


# --- parsing (pure) --------------------------------------------------------------------------


def parse_process(d: Any, where: str = "process") -> Process:
    """A ``process`` object (from config.json, or an ``exec --process`` file)."""
    p = _obj(d, where)
    args = _strs(p.get("args"), f"{where}.args") if "args" in p else ()
    if not args or not args[0]:
        raise _err(f"{where}.args", "must name a program to run")
    env = _strs(p.get("env", []), f"{where}.env")
    for i, e in enumerate(env):
        if "=" not in e or e.startswith("="):
            raise _err(f"{where}.env[{i}]", f"{e!r} is not NAME=VALUE")
    cwd = _abs(p.get("cwd", "/"), f"{where}.cwd")
    user = _obj(p.get("user", {}), f"{where}.user")
    if "username" in user:
        raise _err(f"{where}.user.username", "not supported (give uid and gid)")
    uid = _int(user.get("uid", 0), f"{where}.user.uid", 0, _U32_MAX - 1)
    gid = _int(user.get("gid", 0), f"{where}.user.gid", 0, _U32_MAX - 1)
    gids = tuple(
        _int(g, f"{where}.user.additionalGids[{i}]", 0, _U32_MAX - 1)
        for i, g in enumerate(_list(user.get("additionalGids", []), f"{where}.user.additionalGids"))
    )
    umask = _int(user["umask"], f"{where}.user.umask", 0, 0o777) if user.get("umask") is not None else None
    size = None
    if p.get("consoleSize") is not None:
        cs = _obj(p["consoleSize"], f"{where}.consoleSize")
        size = (
            _int(cs.get("height", 0), f"{where}.consoleSize.height", 0, 0xFFFF),
            _int(cs.get("width", 0), f"{where}.consoleSize.width", 0, 0xFFFF),
        )
    rlimits = []
    for i, r in enumerate(_list(p.get("rlimits", []), f"{where}.rlimits")):
        w = f"{where}.rlimits[{i}]"
        ro = _obj(r, w)
        t = _str(ro.get("type"), f"{w}.type")
        if t not in RLIMITS:
            raise _err(f"{w}.type", f"unknown rlimit {t!r}")
        hard = _int(ro.get("hard"), f"{w}.hard", 0, 2**64 - 1)
        soft = _int(ro.get("soft"), f"{w}.soft", 0, 2**64 - 1)
        if soft > hard:
            raise _err(w, "soft limit above the hard limit")
        rlimits.append(Rlimit(t, hard, soft))
    caps: dict[str, tuple[str, ...]] | None = None
    if p.get("capabilities") is not None:
        co = _obj(p["capabilities"], f"{where}.capabilities")
        caps = {}
        for k, v in co.items():
            if k not in CAP_SETS:
                raise _err(f"{where}.capabilities.{k}", "unknown capability set")
            names = _strs(v, f"{where}.capabilities.{k}")
            for n in names:
                if not n.startswith("CAP_") or not n[4:].replace("_", "").isalnum():
                    raise _err(f"{where}.capabilities.{k}", f"{n!r} is not a capability name")
            caps[k] = names
    return Process(
        args=args,
        env=env,
        cwd=cwd,
        uid=uid,
        gid=gid,
        additional_gids=gids,
        umask=umask,
        terminal=_bool(p.get("terminal", False), f"{where}.terminal"),
        console_size=size,
        rlimits=tuple(rlimits),
        no_new_privileges=_bool(p.get("noNewPrivileges", False), f"{where}.noNewPrivileges"),
        capabilities=caps,
    )


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _hooks(v: Any) -> dict[str, tuple[dict[str, Any], ...]]:
    if v is None:
        return {}
    out: dict[str, tuple[dict[str, Any], ...]] = {}
    for kind, entries in _obj(v, "hooks").items():
        if kind not in HOOK_KINDS:
            raise _err(f"hooks.{kind}", "unknown hook kind")
        checked = []
        for i, h in enumerate(_list(entries, f"hooks.{kind}")):
            w = f"hooks.{kind}[{i}]"
            ho = _obj(h, w)
            _abs(ho.get("path"), f"{w}.path")
            _strs(ho.get("args", []), f"{w}.args")
            _strs(ho.get("env", []), f"{w}.env")
            if ho.get("timeout") is not None:
                _int(ho["timeout"], f"{w}.timeout", 1, 2**31 - 1)
            checked.append(dict(ho))
        out[kind] = tuple(checked)
    return out


MAX_FILE_BIND = 64 * 1024  # a file bound from outside the rootfs is copied into the guest


def _inside(bundle: Path, rootfs: Path, source: str, where: str) -> tuple[str, str]:
    """Where a bind's source (absolute, or relative to the bundle) comes from: ("bind", path inside
    the rootfs); ("file", host path) for a small regular file outside it (Docker binds
    /etc/resolv.conf, /etc/hostname and /etc/hosts so: the guest gets a copy, made at create);
    ("share", host path) for a directory outside it (a volume: shared into the VM over its own
    virtio-9p device); else a BundleError."""
    real_root = os.path.realpath(rootfs)
    given = os.path.abspath(source if os.path.isabs(source) else os.path.join(bundle, source))
    real = os.path.realpath(given)
    if real == real_root or real.startswith(real_root + os.sep):
        return "bind", "/" + os.path.relpath(real, real_root) if real != real_root else "/"
    root = os.path.abspath(rootfs)
    if given == root or given.startswith(root + os.sep):  # named inside, resolves outside
        raise _err(where, f"bind source {source!r} escapes the rootfs through a symlink")
    if os.path.isdir(real):
        return "share", real  # a host directory (a Docker volume): its own virtio-9p share
    if os.path.isfile(real):
        if os.path.getsize(real) > MAX_FILE_BIND:
            raise _err(where, f"bind source {source!r} is outside the rootfs and larger than "
                              f"{MAX_FILE_BIND // 1024} KiB (such files are copied into the VM)")  # fmt: skip
        return "file", real
    raise _err(where, f"bind source {source!r} does not exist or is neither a file nor a directory")


def parse_config(config: Any, bundle: Path, *, check_files: bool = True) -> Bundle:
    """Validate a parsed config.json for the bundle directory ``bundle``."""
    c = _obj(config, "(top level)")
    version = _str(c.get("ociVersion"), "ociVersion") if "ociVersion" in c else ""
    if not version.startswith("1."):
        raise _err("ociVersion", f"{version!r} is not a 1.x OCI runtime spec version")
    for key in ("windows", "solaris", "vm"):
        if key in c:
            raise _err(key, "not supported by this runtime")
    hooks = _hooks(c.get("hooks"))
    root = _obj(c.get("root"), "root")
    root_path = _str(root.get("path"), "root.path")
    if not root_path:
        raise _err("root.path", "empty")
    rootfs = (bundle / root_path) if not os.path.isabs(root_path) else Path(root_path)
    rootfs = Path(os.path.abspath(rootfs))
    if check_files and not rootfs.is_dir():
        raise _err("root.path", f"{rootfs} is not a directory")
    process = parse_process(c["process"]) if c.get("process") is not None else None
    hostname = _str(c.get("hostname", ""), "hostname")
    if len(hostname) > 64:
        raise _err("hostname", "longer than 64 characters")
    mounts = []
    for i, m in enumerate(_list(c.get("mounts", []), "mounts")):
        w = f"mounts[{i}]"
        mo = _obj(m, w)
        dest = _abs(mo.get("destination"), f"{w}.destination")
        options = _strs(mo.get("options", []), f"{w}.options")
        mtype = _str(mo.get("type", ""), f"{w}.type")
        if not mtype and ("bind" in options or "rbind" in options):
            mtype = "bind"
        if mtype not in MOUNT_TYPES:
            raise _err(f"{w}.type", f"mount type {mtype!r} is not supported ({', '.join(MOUNT_TYPES)})")
        source = _str(mo.get("source", mtype), f"{w}.source")
        if mtype == "bind" and check_files:
            mtype, source = _inside(bundle, rootfs, source, f"{w}.source")
        mounts.append(Mount(dest, mtype, source, options))
    linux = _obj(c.get("linux", {}), "linux")
    masked = tuple(
        _abs(p, f"linux.maskedPaths[{i}]")
        for i, p in enumerate(_list(linux.get("maskedPaths", []), "linux.maskedPaths"))
    )
    ro_paths = tuple(
        _abs(p, f"linux.readonlyPaths[{i}]")
        for i, p in enumerate(_list(linux.get("readonlyPaths", []), "linux.readonlyPaths"))
    )
    sysctl: dict[str, str] = {}
    for k, v in _obj(linux.get("sysctl", {}), "linux.sysctl").items():
        if not k or "/" in k or ".." in k:
            raise _err("linux.sysctl", f"bad key {k!r}")
        sysctl[k] = _str(v, f"linux.sysctl.{k}")
    annotations = {
        _str(k, "annotations"): _str(v, f"annotations.{k}")
        for k, v in _obj(c.get("annotations", {}), "annotations").items()
    }
    return Bundle(
        path=Path(os.path.abspath(bundle)),
        rootfs=rootfs,
        readonly=_bool(root.get("readonly", False), "root.readonly"),
        process=process,
        hostname=hostname,
        mounts=tuple(mounts),
        masked_paths=masked,
        readonly_paths=ro_paths,
        sysctl=sysctl,
        annotations=annotations,
        hooks=hooks,
    )


# --- loading (effects) -----------------------------------------------------------------------


def load_bundle(bundle: Path | str) -> Bundle:
    """Read and validate ``<bundle>/config.json``."""
    path = Path(bundle)
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory")
    cfg = path / "config.json"
    try:
        raw = cfg.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"no config.json in bundle {path}") from None
    except OSError as err:
        raise BundleError(f"cannot read {cfg}: {err.strerror}") from None
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BundleError(f"config.json is not valid JSON: {err}") from None
    return parse_config(config, path)
