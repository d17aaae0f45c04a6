"""The SEV kernel hashes table that QEMU writes into guest memory with ``kernel-hashes=on``.

When QEMU boots a confidential guest with ``-kernel`` (and ``kernel-hashes=on``, the default for SNP),
it puts SHA-256 hashes of the kernel, the initrd and the command line into a table at the address
the OVMF footer table gives (GUID 7255371f-...), so that they are part of the launch measurement and
OVMF can check what it loads. Layout (QEMU ``target/i386/sev.c``: ``SevHashTable``), little-endian,
packed::

    GUID 9438d606-4f22-4cc9-b479-a793d411fd21 | u16 length (168)
    GUID 97d02dd8-... (cmdline) | u16 50 | SHA-256 of the command line *including its NUL*
    GUID 44baf731-... (initrd)  | u16 50 | SHA-256 of the initrd (of b"" when there is none)
    GUID 4de79437-... (kernel)  | u16 50 | SHA-256 of the kernel
    zero padding up to a multiple of 16 bytes (176 bytes in all)

SEV and SEV-ES measure the padded table itself (appended after the firmware). SNP measures the
4 KiB page that holds it (the table at the page offset of its address, zeros elsewhere).

Pure: hashes in, bytes out. Hash large files at the edge (see :func:`sevbox.sev.measure.sha256_stream`).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass

from sevbox.errors import FormatError

__all__ = [
    "CMDLINE_GUID",
    "INITRD_GUID",
    "KERNEL_GUID",
    "TABLE_GUID",
    "TABLE_LEN",
    "TABLE_PADDED_LEN",
    "KernelHashes",
    "build_page",
    "build_table",
    "cmdline_bytes",
    "parse_table",
]

TABLE_GUID = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
KERNEL_GUID = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")
INITRD_GUID = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
CMDLINE_GUID = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")

_ENTRY_LEN = 16 + 2 + 32
TABLE_LEN = 16 + 2 + 3 * _ENTRY_LEN  # 168
TABLE_PADDED_LEN = (TABLE_LEN + 15) & ~15  # 176
PAGE_SIZE = 4096
_WHAT = "SEV kernel hashes table"


def cmdline_bytes(append: str | None) -> bytes:
    """The bytes QEMU hashes for a command line: UTF-8 plus the terminating NUL (b"\\0" if none)."""
    return (append or "").encode() + b"\x00"


@dataclass(frozen=True, kw_only=True)
class KernelHashes:
    """SHA-256 digests of the kernel, the initrd and the command line (each 32 bytes)."""

    kernel: bytes
    initrd: bytes
    cmdline: bytes

    def __post_init__(self) -> None:
        for name in ("kernel", "initrd", "cmdline"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"{name} hash must be 32 bytes")

    @classmethod
    def of(cls, *, kernel: bytes, initrd: bytes | None = None, append: str | None = None) -> KernelHashes:
        """Hash the contents themselves (small inputs; hash big files with sha256_stream)."""
        return cls(
            kernel=hashlib.sha256(kernel).digest(),
            initrd=hashlib.sha256(initrd or b"").digest(),
            cmdline=hashlib.sha256(cmdline_bytes(append)).digest(),
        )


def _entry(guid: uuid.UUID, digest: bytes) -> bytes:
    return guid.bytes_le + struct.pack("<H", _ENTRY_LEN) + digest


def build_table(hashes: KernelHashes) -> bytes:
    """The padded table (176 bytes) exactly as QEMU writes it."""
    table = (
        TABLE_GUID.bytes_le
        + struct.pack("<H", TABLE_LEN)
        + _entry(CMDLINE_GUID, hashes.cmdline)
        + _entry(INITRD_GUID, hashes.initrd)
        + _entry(KERNEL_GUID, hashes.kernel)
    )
    return table + bytes(TABLE_PADDED_LEN - TABLE_LEN)


def build_page(hashes: KernelHashes, offset: int) -> bytes:
    """The 4 KiB page holding the table at ``offset`` (the table's GPA modulo 4 KiB), for SNP."""
    if not 0 <= offset <= PAGE_SIZE - TABLE_PADDED_LEN:
        raise FormatError(
            f"the kernel hashes table at page offset {offset:#x} does not fit in its page", what=_WHAT
        )
    return bytes(offset) + build_table(hashes) + bytes(PAGE_SIZE - offset - TABLE_PADDED_LEN)


def parse_table(data: bytes) -> KernelHashes:
    """Read a table back (e.g. from a guest memory dump). Raises FormatError if malformed."""
    if len(data) < TABLE_LEN:
        raise FormatError(f"{len(data)} bytes are too short for the table ({TABLE_LEN})", what=_WHAT)
    if data[:16] != TABLE_GUID.bytes_le:
        raise FormatError("the table GUID is wrong", what=_WHAT)
    length = int.from_bytes(data[16:18], "little")
    if length != TABLE_LEN:
        raise FormatError(f"table length {length} is not {TABLE_LEN}", what=_WHAT)
    found: dict[uuid.UUID, bytes] = {}
    for i in range(3):
        at = 18 + i * _ENTRY_LEN
        guid = uuid.UUID(bytes_le=bytes(data[at : at + 16]))
        if int.from_bytes(data[at + 16 : at + 18], "little") != _ENTRY_LEN:
            raise FormatError(f"entry {i} has the wrong length", what=_WHAT)
        if guid not in (KERNEL_GUID, INITRD_GUID, CMDLINE_GUID) or guid in found:
            raise FormatError(f"entry {i} has an unexpected GUID {guid}", what=_WHAT)
        found[guid] = bytes(data[at + 18 : at + _ENTRY_LEN])
    return KernelHashes(kernel=found[KERNEL_GUID], initrd=found[INITRD_GUID], cmdline=found[CMDLINE_GUID])
