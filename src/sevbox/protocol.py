"""The host <-> guest-agent wire format. Stdlib only; imported by both the host and the agent.

Everything travels over one virtio-serial port as frames::

    offset size  field
    0      2     magic  b"SB"
    2      1     version (VERSION)
    3      1     kind    (Kind: request, response, event, stdin, stdout, stderr)
    4      4     id      big-endian u32: request id (responses echo it); 0 for events and data
    8      4     length  big-endian u32: payload bytes that follow, at most MAX_PAYLOAD

Requests, responses and events carry one UTF-8 JSON object, ``{"type": NAME, ...fields}``; data
frames carry ``u8 len(exec_id) | exec_id | bytes``. Every message is validated on arrival by the
typed classes below: unknown types, unknown or missing fields, wrong types, out-of-range numbers and
oversized frames raise :class:`ProtocolError`. Under SEV the host is the adversary, so the agent
treats every frame this way and keeps serving after rejecting one.

This module avoids ``dataclasses``/``typing`` imports on purpose: the agent imports it at guest boot
under emulation, where every imported module costs milliseconds.
"""

from __future__ import annotations

import base64
import json
import struct

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_DATA",
    "MAX_PAYLOAD",
    "SECRETS_ANNOTATION",
    "VERSION",
    "CloseStdin",
    "ContainerSpec",
    "CreateContainer",
    "Decoder",
    "ExecProcess",
    "Exited",
    "GuestInfo",
    "Kind",
    "ListProcesses",
    "Mount",
    "Ping",
    "ProcessSpec",
    "ProtocolError",
    "Ready",
    "Rejected",
    "ResizeTty",
    "Response",
    "Rlimit",
    "Shutdown",
    "SignalProcess",
    "StartContainer",
    "WaitProcess",
    "data_header",
    "decode_data",
    "decode_event",
    "decode_request",
    "decode_response",
    "encode_data",
    "encode_message",
    "frame",
    "parse_secrets",
]

MAGIC = b"SB"
VERSION = 1
HEADER = struct.Struct(">2sBBII")
MAX_PAYLOAD = 1 << 20  # one frame's payload; a container spec is far smaller
MAX_ID = 64  # exec ids
MAX_DATA = 512 * 1024  # stream data per frame: big for throughput, bounded so control frames interleave
MAX_STR = 4096  # any single string field
MAX_LIST = 1024  # any list field
_U32 = 0xFFFFFFFF


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol. The message says what and where."""


class Kind:
    REQUEST = 1
    RESPONSE = 2
    EVENT = 3
    STDIN = 4
    STDOUT = 5
    STDERR = 6
    ALL = (1, 2, 3, 4, 5, 6)
    DATA = (4, 5, 6)


# --- framing ---------------------------------------------------------------------------------


def frame(kind: int, req_id: int, payload: bytes) -> bytes:
    if kind not in Kind.ALL:
        raise ProtocolError(f"unknown frame kind {kind}")
    if not 0 <= req_id <= _U32:
        raise ProtocolError("frame id out of range")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, VERSION, kind, req_id, len(payload)) + payload


class Decoder:
    """Incremental frame decoder: feed bytes, get ``(kind, id, payload)`` tuples.

    A bad header cannot be resynchronised reliably, so it raises ProtocolError and the decoder
    then skips to the next occurrence of the magic (``resync``), which is what the agent does to keep
    serving after garbage.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        out: list[tuple[int, int, bytes]] = []
        while len(self._buf) >= HEADER.size:
            magic, version, kind, req_id, length = HEADER.unpack_from(self._buf)
            if magic != MAGIC:
                self._resync()
                raise ProtocolError("bad frame magic")
            if version != VERSION:
                self._resync()
                raise ProtocolError(f"unsupported protocol version {version} (this side speaks {VERSION})")
            if kind not in Kind.ALL:
                self._resync()
                raise ProtocolError(f"unknown frame kind {kind}")
            if length > MAX_PAYLOAD:
                self._resync()
                raise ProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append((kind, req_id, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _resync(self) -> None:
        i = self._buf.find(MAGIC, 1)
        if i < 0:
            keep = 1 if self._buf[-1:] == MAGIC[:1] else 0
            del self._buf[: len(self._buf) - keep]
        else:
            del self._buf[:i]


def encode_data(kind: int, exec_id: str, data: bytes) -> bytes:
    if kind not in Kind.DATA:
        raise ProtocolError(f"frame kind {kind} carries no stream data")
    eid = _check_exec_id(exec_id, "exec_id").encode()
    return frame(kind, 0, bytes([len(eid)]) + eid + data)


def data_header(kind: int, exec_id: str, size: int) -> bytes:
    """The bytes that precede ``size`` bytes of stream data in a data frame (for writev: the data
    itself need not be copied into the frame)."""
    if kind not in Kind.DATA:
        raise ProtocolError(f"frame kind {kind} carries no stream data")
    if not 0 <= size <= MAX_DATA:
        raise ProtocolError(f"stream data of {size} bytes exceeds {MAX_DATA}")
    eid = _check_exec_id(exec_id, "exec_id").encode()
    return HEADER.pack(MAGIC, VERSION, kind, 0, 1 + len(eid) + size) + bytes([len(eid)]) + eid


def decode_data(payload: bytes) -> tuple[str, bytes]:
    if not payload:
        raise ProtocolError("data frame without exec id")
    n = payload[0]
    if len(payload) < 1 + n:
        raise ProtocolError("data frame truncated in its exec id")
    try:
        eid = payload[1 : 1 + n].decode()
    except UnicodeDecodeError:
        raise ProtocolError("data frame exec id is not UTF-8") from None
    return _check_exec_id(eid, "exec_id"), payload[1 + n :]


# --- field checks ----------------------------------------------------------------------------


def _obj(raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("payload is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("payload is not a JSON object")
    return value


def _only(d: dict[str, object], where: str, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise ProtocolError(f"{where}: unknown field {extra[0]!r}")


def _get(d: dict[str, object], key: str, where: str) -> object:
    if key not in d:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return d[key]


def _str(v: object, where: str, *, limit: int = MAX_STR) -> str:
    if not isinstance(v, str):
        raise ProtocolError(f"{where}: expected a string")
    if len(v) > limit:
        raise ProtocolError(f"{where}: longer than {limit} characters")
    if "\0" in v:
        raise ProtocolError(f"{where}: contains NUL")
    return v


def _int(v: object, where: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"{where}: expected an integer")
    if not lo <= v <= hi:
        raise ProtocolError(f"{where}: {v} out of range {lo}..{hi}")
    return v


def _bool(v: object, where: str) -> bool:
    if not isinstance(v, bool):
        raise ProtocolError(f"{where}: expected true or false")
    return v


def _list(v: object, where: str) -> list[object]:
    if not isinstance(v, list):
        raise ProtocolError(f"{where}: expected a list")
    if len(v) > MAX_LIST:
        raise ProtocolError(f"{where}: more than {MAX_LIST} items")
    return v


def _strs(v: object, where: str) -> tuple[str, ...]:
    return tuple(_str(x, f"{where}[{i}]") for i, x in enumerate(_list(v, where)))


def _check_exec_id(v: object, where: str) -> str:
    s = _str(v, where, limit=MAX_ID)
    if not all(c.isalnum() or c in "_+-." for c in s):
        raise ProtocolError(f"{where}: {s!r} has characters outside [A-Za-z0-9_+-.]")
    return s


def _path(v: object, where: str) -> str:
    s = _str(v, where)
    if not s.startswith("/"):
        raise ProtocolError(f"{where}: {s!r} is not an absolute path")
    return s


# --- typed values ----------------------------------------------------------------------------


class Rlimit:
    __slots__ = ("hard", "soft", "type")
    NAMES = (
        "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
        "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
        "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
    )  # fmt: skip

    def __init__(self, type: str, hard: int, soft: int) -> None:
        self.type = type
        self.hard = hard
        self.soft = soft

    def to_obj(self) -> dict[str, object]:
        return {"type": self.type, "hard": self.hard, "soft": self.soft}

    @classmethod
    def from_obj(cls, v: object, where: str) -> Rlimit:
        d = _dict(v, where)
        _only(d, where, ("type", "hard", "soft"))
        t = _str(_get(d, "type", where), f"{where}.type")
        if t not in cls.NAMES:
            raise ProtocolError(f"{where}.type: unknown rlimit {t!r}")
        hard = _int(_get(d, "hard", where), f"{where}.hard", 0, 2**64 - 1)
        soft = _int(_get(d, "soft", where), f"{where}.soft", 0, 2**64 - 1)
        return cls(t, hard, soft)


def _dict(v: object, where: str) -> dict[str, object]:
    if not isinstance(v, dict):
        raise ProtocolError(f"{where}: expected an object")
    return v


CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


class ProcessSpec:
    """A process to run in the container: what the agent needs from OCI's ``process``."""

    __slots__ = (
        "additional_gids", "args", "capabilities", "console_size", "cwd", "env", "gid",
        "no_new_privileges", "rlimits", "terminal", "uid", "umask",
    )  # fmt: skip

    def __init__(
        self,
        *,
        args: tuple[str, ...],
        env: tuple[str, ...] = (),
        cwd: str = "/",
        uid: int = 0,
        gid: int = 0,
        additional_gids: tuple[int, ...] = (),
        terminal: bool = False,
        console_size: tuple[int, int] | None = None,
        rlimits: tuple[Rlimit, ...] = (),
        no_new_privileges: bool = False,
        capabilities: dict[str, tuple[str, ...]] | None = None,
        umask: int | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids
        self.terminal = terminal
        self.console_size = console_size
        self.rlimits = rlimits
        self.no_new_privileges = no_new_privileges
        self.capabilities = capabilities
        self.umask = umask

    def to_obj(self) -> dict[str, object]:
        return {
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "uid": self.uid,
            "gid": self.gid,
            "additional_gids": list(self.additional_gids),
            "terminal": self.terminal,
            "console_size": list(self.console_size) if self.console_size else None,
            "rlimits": [r.to_obj() for r in self.rlimits],
            "no_new_privileges": self.no_new_privileges,
            "capabilities": (
                {k: list(v) for k, v in self.capabilities.items()} if self.capabilities is not None else None
            ),
            "umask": self.umask,
        }

    @classmethod
    def from_obj(cls, v: object, where: str = "process") -> ProcessSpec:
        d = _dict(v, where)
        _only(d, where, cls.__slots__)
        args = _strs(_get(d, "args", where), f"{where}.args")
        if not args or not args[0]:
            raise ProtocolError(f"{where}.args: must name a program")
        env = _strs(_get(d, "env", where), f"{where}.env")
        for i, e in enumerate(env):
            if "=" not in e:
                raise ProtocolError(f"{where}.env[{i}]: {e!r} is not NAME=VALUE")
        size_raw = d.get("console_size")
        size = None
        if size_raw is not None:
            pair = _list(size_raw, f"{where}.console_size")
            if len(pair) != 2:
                raise ProtocolError(f"{where}.console_size: expected [rows, cols]")
            size = (
                _int(pair[0], f"{where}.console_size[0]", 0, 0xFFFF),
                _int(pair[1], f"{where}.console_size[1]", 0, 0xFFFF),
            )
        caps_raw = d.get("capabilities")
        caps: dict[str, tuple[str, ...]] | None = None
        if caps_raw is not None:
            cd = _dict(caps_raw, f"{where}.capabilities")
            _only(cd, f"{where}.capabilities", CAP_SETS)
            caps = {}
            for k, lst in cd.items():
                names = _strs(lst, f"{where}.capabilities.{k}")
                for n in names:
                    if not n.startswith("CAP_"):
                        raise ProtocolError(f"{where}.capabilities.{k}: {n!r} is not a capability")
                caps[k] = names
        umask_raw = d.get("umask")
        return cls(
            args=args,
            env=env,
            cwd=_path(_get(d, "cwd", where), f"{where}.cwd"),
            uid=_int(_get(d, "uid", where), f"{where}.uid", 0, _U32 - 1),
            gid=_int(_get(d, "gid", where), f"{where}.gid", 0, _U32 - 1),
            additional_gids=tuple(
                _int(g, f"{where}.additional_gids[{i}]", 0, _U32 - 1)
                for i, g in enumerate(_list(d.get("additional_gids", []), f"{where}.additional_gids"))
            ),
            terminal=_bool(d.get("terminal", False), f"{where}.terminal"),
            console_size=size,
            rlimits=tuple(
                Rlimit.from_obj(r, f"{where}.rlimits[{i}]")
                for i, r in enumerate(_list(d.get("rlimits", []), f"{where}.rlimits"))
            ),
            no_new_privileges=_bool(d.get("no_new_privileges", False), f"{where}.no_new_privileges"),
            capabilities=caps,
            umask=None if umask_raw is None else _int(umask_raw, f"{where}.umask", 0, 0o777),
        )


class Mount:
    """A mount in the container. Type ``file``: ``data`` (base64, at most MAX_FILE_DATA) is the
    content of a host file bound from outside the rootfs; the agent writes it to its own tmpfs and
    binds that onto ``destination``."""

    __slots__ = ("data", "destination", "options", "source", "type")
    TYPES = ("proc", "sysfs", "tmpfs", "devpts", "mqueue", "bind", "cgroup", "cgroup2", "file", "9p")
    MAX_FILE_DATA = 96 * 1024  # base64 of a 64 KiB file, with room

    def __init__(
        self, destination: str, type: str, source: str, options: tuple[str, ...] = (), data: str = ""
    ) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options
        self.data = data

    def to_obj(self) -> dict[str, object]:
        out: dict[str, object] = {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }
        if self.type == "file":
            out["data"] = self.data
        return out

    @classmethod
    def from_obj(cls, v: object, where: str) -> Mount:
        d = _dict(v, where)
        _only(d, where, cls.__slots__)
        t = _str(_get(d, "type", where), f"{where}.type")
        if t not in cls.TYPES:
            raise ProtocolError(f"{where}.type: unsupported mount type {t!r}")
        data = ""
        if t == "file":
            data = _str(_get(d, "data", where), f"{where}.data", limit=cls.MAX_FILE_DATA)
            try:
                base64.b64decode(data, validate=True)
            except ValueError:
                raise ProtocolError(f"{where}.data: not base64") from None
        elif "data" in d:
            raise ProtocolError(f"{where}.data: only a 'file' mount carries data")
        if t == "9p":  # source: the mount tag of one of the VM's virtio-9p devices
            tag = _str(_get(d, "source", where), f"{where}.source")
            if not tag or len(tag) > 31 or not tag.replace("_", "").replace("-", "").isalnum():
                raise ProtocolError(f"{where}.source: bad 9p mount tag {tag!r}")
        return cls(
            destination=_path(_get(d, "destination", where), f"{where}.destination"),
            type=t,
            source=_str(_get(d, "source", where), f"{where}.source"),
            options=_strs(d.get("options", []), f"{where}.options"),
            data=data,
        )


class ContainerSpec:
    """What the agent needs to set a container up: the validated subset of an OCI config."""

    __slots__ = (
        "hostname", "masked_paths", "mounts", "process", "readonly", "readonly_paths", "rootfs_tag",
        "secrets", "sysctl",
    )  # fmt: skip

    def __init__(
        self,
        *,
        process: ProcessSpec,
        rootfs_tag: str = "rootfs",
        hostname: str = "",
        readonly: bool = False,
        mounts: tuple[Mount, ...] = (),
        masked_paths: tuple[str, ...] = (),
        readonly_paths: tuple[str, ...] = (),
        sysctl: dict[str, str] | None = None,
        secrets: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.process = process
        self.rootfs_tag = rootfs_tag
        self.hostname = hostname
        self.readonly = readonly
        self.mounts = mounts
        self.masked_paths = masked_paths
        self.readonly_paths = readonly_paths
        self.sysctl = sysctl or {}
        self.secrets = secrets  # launch secrets: (name, GUID) pairs, see parse_secrets

    def to_obj(self) -> dict[str, object]:
        obj = {
            "process": self.process.to_obj(),
            "rootfs_tag": self.rootfs_tag,
            "hostname": self.hostname,
            "readonly": self.readonly,
            "mounts": [m.to_obj() for m in self.mounts],
            "masked_paths": list(self.masked_paths),
            "readonly_paths": list(self.readonly_paths),
            "sysctl": dict(self.sysctl),
        }
        if self.secrets:  # absent when empty: older agents see nothing new
            obj["secrets"] = [[name, guid] for name, guid in self.secrets]
        return obj

    @classmethod
    def from_obj(cls, v: object, where: str = "container") -> ContainerSpec:
        d = _dict(v, where)
        _only(d, where, cls.__slots__)
        hostname = _str(d.get("hostname", ""), f"{where}.hostname", limit=64)
        sysctl_raw = _dict(d.get("sysctl", {}), f"{where}.sysctl")
        sysctl: dict[str, str] = {}
        for k, val in sysctl_raw.items():
            key = _str(k, f"{where}.sysctl key")
            if not key or "/" in key or ".." in key:
                raise ProtocolError(f"{where}.sysctl: bad key {key!r}")
            sysctl[key] = _str(val, f"{where}.sysctl.{key}")
        tag = _str(d.get("rootfs_tag", "rootfs"), f"{where}.rootfs_tag", limit=31)
        return cls(
            process=ProcessSpec.from_obj(_get(d, "process", where), f"{where}.process"),
            rootfs_tag=tag,
            hostname=hostname,
            readonly=_bool(d.get("readonly", False), f"{where}.readonly"),
            mounts=tuple(
                Mount.from_obj(m, f"{where}.mounts[{i}]")
                for i, m in enumerate(_list(d.get("mounts", []), f"{where}.mounts"))
            ),
            masked_paths=tuple(
                _path(p, f"{where}.masked_paths[{i}]")
                for i, p in enumerate(_list(d.get("masked_paths", []), f"{where}.masked_paths"))
            ),
            readonly_paths=tuple(
                _path(p, f"{where}.readonly_paths[{i}]")
                for i, p in enumerate(_list(d.get("readonly_paths", []), f"{where}.readonly_paths"))
            ),
            sysctl=sysctl,
            secrets=_secrets(d.get("secrets", []), f"{where}.secrets"),
        )


# --- launch secrets (attest owner: the sevbox.secrets annotation) -----------------------------
# The guest owner injects secrets into an SEV guest's firmware area (sevbox attest inject); Linux
# shows each at /sys/kernel/security/secrets/coco/<GUID> (efi_secret). The bundle annotation
# ``sevbox.secrets = "name=GUID[,name=GUID]"`` asks the agent to copy them to /run/secrets/<name>.

SECRETS_ANNOTATION = "sevbox.secrets"
_HEX = "0123456789abcdef"


def _secret_name(v: object, where: str) -> str:
    name = _str(v, where, limit=64)
    bad = [c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))]
    if not name or name in (".", "..") or bad:
        raise ProtocolError(f"{where}: bad secret name {name!r} (letters, digits, '.', '_', '-')")
    return name


def _guid(v: object, where: str) -> str:
    guid = _str(v, where, limit=36).lower()
    parts = guid.split("-")
    if [len(x) for x in parts] != [8, 4, 4, 4, 12] or any(c not in _HEX for x in parts for c in x):
        raise ProtocolError(f"{where}: {guid!r} is not a GUID (8-4-4-4-12 hex digits)")
    return guid


def _secrets(v: object, where: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(_list(v, where)):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ProtocolError(f"{where}[{i}]: expected [name, GUID]")
        out.append((_secret_name(pair[0], f"{where}[{i}]"), _guid(pair[1], f"{where}[{i}]")))
    if len({name for name, _ in out}) != len(out):
        raise ProtocolError(f"{where}: a secret name appears twice")
    return tuple(out)


def parse_secrets(text: str) -> tuple[tuple[str, str], ...]:
    """``"name=GUID[,name=GUID]"`` -> ((name, guid), ...). Raises ProtocolError naming the problem."""
    pairs: list[list[str]] = []
    for item in text.split(","):
        name, eq, guid = item.strip().partition("=")
        if not eq:
            raise ProtocolError(f"{SECRETS_ANNOTATION}: {item.strip()!r} is not name=GUID")
        pairs.append([name.strip(), guid.strip()])
    return _secrets(pairs, SECRETS_ANNOTATION)


# --- messages --------------------------------------------------------------------------------


class _Message:
    TYPE = ""
    FIELDS: tuple[str, ...] = ()

    def to_obj(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.TYPE}
        for f in self.FIELDS:
            out[f] = getattr(self, f)
        return out

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_obj() == other.to_obj()

    def __hash__(self) -> int:
        return hash(self.TYPE)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS)
        return f"{type(self).__name__}({fields})"


class CreateContainer(_Message):
    TYPE = "CreateContainer"
    FIELDS = ("container",)

    def __init__(self, container: ContainerSpec) -> None:
        self.container = container

    def to_obj(self) -> dict[str, object]:
        return {"type": self.TYPE, "container": self.container.to_obj()}

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> CreateContainer:
        _only(d, cls.TYPE, ("type", "container"))
        return cls(ContainerSpec.from_obj(_get(d, "container", cls.TYPE)))


class StartContainer(_Message):
    TYPE = "StartContainer"

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> StartContainer:
        _only(d, cls.TYPE, ("type",))
        return cls()


class ExecProcess(_Message):
    TYPE = "ExecProcess"
    FIELDS = ("exec_id", "process")

    def __init__(self, exec_id: str, process: ProcessSpec) -> None:
        self.exec_id = exec_id
        self.process = process

    def to_obj(self) -> dict[str, object]:
        return {"type": self.TYPE, "exec_id": self.exec_id, "process": self.process.to_obj()}

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> ExecProcess:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        eid = _check_exec_id(_get(d, "exec_id", cls.TYPE), f"{cls.TYPE}.exec_id")
        if not eid:
            raise ProtocolError(f"{cls.TYPE}.exec_id: empty (the init process is started by StartContainer)")
        return cls(eid, ProcessSpec.from_obj(_get(d, "process", cls.TYPE), f"{cls.TYPE}.process"))


class _ExecIdOnly(_Message):
    FIELDS = ("exec_id",)

    def __init__(self, exec_id: str) -> None:
        self.exec_id = exec_id

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> _ExecIdOnly:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        return cls(_check_exec_id(_get(d, "exec_id", cls.TYPE), f"{cls.TYPE}.exec_id"))


class WaitProcess(_ExecIdOnly):
    """Respond once the process has exited (status in the response); "" is the init process."""

    TYPE = "WaitProcess"


class CloseStdin(_ExecIdOnly):
    TYPE = "CloseStdin"


class SignalProcess(_Message):
    TYPE = "SignalProcess"
    FIELDS = ("exec_id", "signal")

    def __init__(self, exec_id: str, signal: int) -> None:
        self.exec_id = exec_id
        self.signal = signal

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> SignalProcess:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        return cls(
            _check_exec_id(_get(d, "exec_id", cls.TYPE), f"{cls.TYPE}.exec_id"),
            _int(_get(d, "signal", cls.TYPE), f"{cls.TYPE}.signal", 1, 64),
        )


class ResizeTty(_Message):
    TYPE = "ResizeTty"
    FIELDS = ("exec_id", "rows", "cols")

    def __init__(self, exec_id: str, rows: int, cols: int) -> None:
        self.exec_id = exec_id
        self.rows = rows
        self.cols = cols

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> ResizeTty:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        return cls(
            _check_exec_id(_get(d, "exec_id", cls.TYPE), f"{cls.TYPE}.exec_id"),
            _int(_get(d, "rows", cls.TYPE), f"{cls.TYPE}.rows", 0, 0xFFFF),
            _int(_get(d, "cols", cls.TYPE), f"{cls.TYPE}.cols", 0, 0xFFFF),
        )


class ListProcesses(_Message):
    TYPE = "ListProcesses"

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> ListProcesses:
        _only(d, cls.TYPE, ("type",))
        return cls()


class Shutdown(_Message):
    TYPE = "Shutdown"

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Shutdown:
        _only(d, cls.TYPE, ("type",))
        return cls()


class GuestInfo(_Message):
    """Ask the guest about itself: whether its kernel reports memory encryption, and its memory
    canary for ``sevbox verify-memory``. The canary (and an owner's marker) travel inverted (bitwise
    NOT) so that their plaintext never crosses the shared channel: ``marker_inverted`` is hex."""

    TYPE = "GuestInfo"
    FIELDS = ("marker_inverted",)

    def __init__(self, marker_inverted: str = "") -> None:
        self.marker_inverted = marker_inverted

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> GuestInfo:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        where = f"{cls.TYPE}.marker_inverted"
        marker = _str(d.get("marker_inverted", ""), where, limit=8192)
        if len(marker) % 2 or any(c not in "0123456789abcdef" for c in marker):
            raise ProtocolError(f"{where}: must be lower-case hex")
        return cls(marker)


class Ping(_Message):
    TYPE = "Ping"

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Ping:
        _only(d, cls.TYPE, ("type",))
        return cls()


REQUESTS: dict[str, type[_Message]] = {
    c.TYPE: c
    for c in (
        CreateContainer,
        StartContainer,
        ExecProcess,
        SignalProcess,
        WaitProcess,
        CloseStdin,
        ResizeTty,
        ListProcesses,
        Shutdown,
        Ping,
        GuestInfo,
    )
}


class Response(_Message):
    """The answer to one request: ``ok`` or an ``error`` message; ``pids``/``status`` where asked."""

    TYPE = "Response"
    FIELDS = ("ok", "error", "pids", "status", "info")
    MAX_INFO = 16

    def __init__(
        self,
        ok: bool,
        error: str = "",
        pids: tuple[int, ...] = (),
        status: int | None = None,
        info: dict[str, str] | None = None,
    ) -> None:
        self.ok = ok
        self.error = error
        self.pids = pids
        self.status = status
        self.info = info or {}

    def to_obj(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": self.TYPE,
            "ok": self.ok,
            "error": self.error,
            "pids": list(self.pids),
            "status": self.status,
        }
        if self.info:
            out["info"] = dict(self.info)
        return out

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Response:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        st = d.get("status")
        return cls(
            ok=_bool(_get(d, "ok", cls.TYPE), f"{cls.TYPE}.ok"),
            error=_str(d.get("error", ""), f"{cls.TYPE}.error"),
            pids=tuple(
                _int(p, f"{cls.TYPE}.pids[{i}]", 1, 1 << 22)
                for i, p in enumerate(_list(d.get("pids", []), f"{cls.TYPE}.pids"))
            ),
            status=None if st is None else _int(st, f"{cls.TYPE}.status", 0, 255),
            info=cls._info(d.get("info", {})),
        )

    @classmethod
    def _info(cls, v: object) -> dict[str, str]:
        where = f"{cls.TYPE}.info"
        d = _dict(v, where)
        if len(d) > cls.MAX_INFO:
            raise ProtocolError(f"{where}: more than {cls.MAX_INFO} entries")
        return {_str(k, where): _str(x, f"{where}.{k}", limit=16384) for k, x in d.items()}


class Ready(_Message):
    """The agent is up. ``timings`` are seconds since guest boot (CLOCK_BOOTTIME) of agent stages."""

    TYPE = "Ready"
    FIELDS = ("version", "timings")

    def __init__(self, version: int, timings: dict[str, float]) -> None:
        self.version = version
        self.timings = timings

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Ready:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        raw = _dict(d.get("timings", {}), f"{cls.TYPE}.timings")
        if len(raw) > 32:
            raise ProtocolError(f"{cls.TYPE}.timings: too many entries")
        timings: dict[str, float] = {}
        for k, v in raw.items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ProtocolError(f"{cls.TYPE}.timings.{k}: expected a number")
            timings[_str(k, f"{cls.TYPE}.timings key", limit=64)] = float(v)
        return cls(_int(_get(d, "version", cls.TYPE), f"{cls.TYPE}.version", 0, 255), timings)


class Exited(_Message):
    """A process ended; ``status`` is its exit code or 128+N if killed by signal N."""

    TYPE = "Exited"
    FIELDS = ("exec_id", "status")

    def __init__(self, exec_id: str, status: int) -> None:
        self.exec_id = exec_id
        self.status = status

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Exited:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        return cls(
            _check_exec_id(_get(d, "exec_id", cls.TYPE), f"{cls.TYPE}.exec_id"),
            _int(_get(d, "status", cls.TYPE), f"{cls.TYPE}.status", 0, 255),
        )


class Rejected(_Message):
    """The agent rejected a frame it could not attribute to a request (bad header, bad payload)."""

    TYPE = "Rejected"
    FIELDS = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @classmethod
    def from_obj(cls, d: dict[str, object]) -> Rejected:
        _only(d, cls.TYPE, ("type", *cls.FIELDS))
        return cls(_str(_get(d, "reason", cls.TYPE), f"{cls.TYPE}.reason"))


EVENTS: dict[str, type[_Message]] = {c.TYPE: c for c in (Ready, Exited, Rejected)}


def encode_message(kind: int, req_id: int, msg: _Message) -> bytes:
    if kind not in (Kind.REQUEST, Kind.RESPONSE, Kind.EVENT):
        raise ProtocolError(f"frame kind {kind} does not carry a message")
    return frame(kind, req_id, json.dumps(msg.to_obj(), separators=(",", ":")).encode())


def _decode(payload: bytes, table: dict[str, type[_Message]], what: str) -> _Message:
    d = _obj(payload)
    t = d.get("type")
    if not isinstance(t, str) or t not in table:
        shown = t if isinstance(t, str) and len(t) <= 40 else "?"
        raise ProtocolError(f"unknown {what} type {shown!r}")
    return table[t].from_obj(d)  # type: ignore[attr-defined, no-any-return]


def decode_request(payload: bytes) -> _Message:
    return _decode(payload, REQUESTS, "request")


def decode_event(payload: bytes) -> _Message:
    return _decode(payload, EVENTS, "event")


def decode_response(payload: bytes) -> Response:
    d = _obj(payload)
    if d.get("type") != Response.TYPE:
        raise ProtocolError("response payload is not a Response")
    return Response.from_obj(d)
