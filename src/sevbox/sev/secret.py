"""LAUNCH_SECRET: the secret table OVMF reads, and the packet (header + encrypted payload).

Secret table (OVMF/QEMU's format, as sevctl and virt-qemu-sev-validate build it)::

    table GUID 1e74f542-71dd-4d66-963e-ef4287ff173b (16, little-endian GUID) | u32 table length
    then per secret: GUID (16, little-endian) | u32 entry length (20 + len(secret)) | secret bytes
    then zero padding to a multiple of 16 (sevctl: none when already aligned)

Packet (AMD SEV API #55766, "LAUNCH_SECRET", Table "Packet Header Buffer")::

    payload = AES-128-CTR(TEK, IV, table)
    header  = u32le FLAGS (0) | IV[16] | MAC[32]
    MAC     = HMAC-SHA256(TIK, 0x01 | u32le FLAGS | IV | u32le GUEST_LENGTH | u32le TRANS_LENGTH
                                | payload | MEASURE)

MEASURE is the 32-byte launch measurement (the first 32 bytes of the LAUNCH_MEASURE blob). Both
lengths are the table's length (no compression). The IV is an argument; the CLI draws it.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sevbox.errors import FormatError, UsageError
from sevbox.sev.session import aes128_ctr, hmac_sha256

__all__ = [
    "ALIASES",
    "HEADER_SIZE",
    "TABLE_GUID",
    "SecretPacket",
    "build_packet",
    "build_table",
    "parse_table",
    "qemu_inject_args",
    "resolve_guid",
]

TABLE_GUID = uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
ALIASES: dict[str, uuid.UUID] = {"luks-key": uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")}
HEADER_SIZE = 52
_ENTRY_HEAD = 20
_MAX_TABLE = 0xFFFF_FFFF
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def resolve_guid(alias_or_guid: str) -> uuid.UUID:
    """A GUID in its 8-4-4-4-12 form, or a known alias (``luks-key``)."""
    if _GUID_RE.match(alias_or_guid):
        return uuid.UUID(alias_or_guid)
    if alias_or_guid in ALIASES:
        return ALIASES[alias_or_guid]
    raise UsageError(
        f"secret name {alias_or_guid!r} is neither a GUID (8-4-4-4-12 hex) nor a known alias "
        f"({', '.join(ALIASES)})"
    )


def build_table(secrets: Sequence[tuple[uuid.UUID, bytes]]) -> bytes:
    """The secret table for ``(guid, value)`` pairs, in order. GUIDs must be distinct."""
    if not secrets:
        raise UsageError("at least one secret is needed")
    seen: set[uuid.UUID] = set()
    body = b""
    for guid, value in secrets:
        if guid in seen:
            raise UsageError(f"secret GUID {guid} given twice")
        seen.add(guid)
        body += guid.bytes_le + struct.pack("<I", _ENTRY_HEAD + len(value)) + bytes(value)
    length = _ENTRY_HEAD + len(body)
    if length > _MAX_TABLE:
        raise UsageError("secret table too large")
    table = TABLE_GUID.bytes_le + struct.pack("<I", length) + body
    return table + bytes(-len(table) % 16)


def parse_table(table: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """Read a secret table back (as the guest's firmware does). Malformed: FormatError."""
    what = "secret table"
    if len(table) < _ENTRY_HEAD:
        raise FormatError(f"secret table truncated: {len(table)} bytes", what=what)
    if uuid.UUID(bytes_le=bytes(table[:16])) != TABLE_GUID:
        raise FormatError("secret table does not start with the table GUID", what=what)
    (length,) = struct.unpack_from("<I", table, 16)
    if not _ENTRY_HEAD <= length <= len(table):
        raise FormatError(f"secret table length {length} out of range (have {len(table)} bytes)", what=what)
    if any(table[length:]):
        raise FormatError("secret table padding is not zero", what=what)
    out: list[tuple[uuid.UUID, bytes]] = []
    pos = _ENTRY_HEAD
    while pos < length:
        if length - pos < _ENTRY_HEAD:
            raise FormatError(f"secret entry at {pos} truncated", what=what)
        guid = uuid.UUID(bytes_le=bytes(table[pos : pos + 16]))
        (size,) = struct.unpack_from("<I", table, pos + 16)
        if size < _ENTRY_HEAD or pos + size > length:
            raise FormatError(f"secret entry at {pos}: length {size} out of range", what=what)
        out.append((guid, bytes(table[pos + _ENTRY_HEAD : pos + size])))
        pos += size
    return out


@dataclass(frozen=True, slots=True)
class SecretPacket:
    header: bytes  # 52 bytes: flags, IV, MAC
    payload: bytes  # the encrypted table

    @property
    def iv(self) -> bytes:
        return self.header[4:20]

    @property
    def mac(self) -> bytes:
        return self.header[20:52]

    def header_b64(self) -> str:
        return base64.b64encode(self.header).decode()

    def payload_b64(self) -> str:
        return base64.b64encode(self.payload).decode()


def _check16(name: str, value: bytes) -> None:
    if len(value) != 16:
        raise FormatError(f"{name} must be 16 bytes, got {len(value)}", what=name)


def build_packet(
    *, tek: bytes, tik: bytes, measurement: bytes, table: bytes, iv: bytes, flags: int = 0
) -> SecretPacket:
    """Encrypt ``table`` under TEK and MAC it with TIK, bound to ``measurement`` (32 bytes, or the
    48-byte LAUNCH_MEASURE blob, whose first 32 bytes are the measurement)."""
    _check16("TEK", tek)
    _check16("TIK", tik)
    _check16("IV", iv)
    if len(measurement) not in (32, 48):
        raise FormatError(
            f"measurement must be 32 bytes (or the 48-byte launch-measure blob), got {len(measurement)}",
            what="measurement",
        )
    if not 0 <= flags <= 0xFFFF_FFFF:
        raise FormatError(f"flags {flags:#x} do not fit in 32 bits", what="flags")
    payload = aes128_ctr(tek, iv, table)
    length = struct.pack("<I", len(table))
    msg = b"\x01" + struct.pack("<I", flags) + iv + length + length + payload + measurement[:32]
    header = struct.pack("<I", flags) + iv + hmac_sha256(tik, msg)
    return SecretPacket(header=header, payload=payload)


def qemu_inject_args(packet: SecretPacket, gpa: int | None = None) -> dict[str, object]:
    """Arguments of QEMU's QMP ``sev-inject-launch-secret`` for this packet (``gpa`` optional:
    QEMU then uses the OVMF secret area from the firmware's GUID table)."""
    args: dict[str, object] = {"packet-header": packet.header_b64(), "secret": packet.payload_b64()}
    if gpa is not None:
        if not 0 <= gpa < 1 << 64:
            raise UsageError(f"gpa {gpa:#x} out of range")
        args["gpa"] = gpa
    return args
