"""OVMF firmware images: the footer GUID table, SEV metadata (ASEV) sections, SEV-ES reset vector.

Pure: :func:`parse_ovmf` takes the firmware image's bytes (the whole ``OVMF.fd``/``OVMF_CODE.fd``,
or any suffix of it that holds the table) and returns an :class:`Ovmf`. Malformed bytes raise
:class:`~sevbox.errors.FormatError`; an image without a footer table is not malformed (old builds,
non-SEV builds): it simply has no SEV entries.

Layout (edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm``), counted from the end of the image::

    ... | entry_n data | u16 size | GUID | ... | entry_1 data | u16 size | GUID |   <- table
        | u16 table size | footer GUID 96b582de-... | 32 bytes (reset vector) |   <- end of image

Each entry's ``size`` includes its 18-byte (u16 size + GUID) trailer; entries are read from the footer
backwards. The footer's ``size`` covers the whole table including the footer's own 18 bytes.

The SEV metadata entry (GUID dc886566-...) holds a u32 offset counted back from the end of the image
to an ``ASEV`` header (signature, u32 size, u32 version 1, u32 count) followed by ``count``
descriptors of (u32 gpa, u32 size, u32 type) (edk2 ``OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm``).

The image is mapped so that it ends at 4 GiB: :attr:`Ovmf.gpa` is ``4 GiB - len(image)``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from types import MappingProxyType

from sevbox.errors import FormatError

__all__ = [
    "FOOTER_GUID",
    "FOUR_GIB",
    "SEV_ES_RESET_BLOCK_GUID",
    "SEV_HASH_TABLE_RV_GUID",
    "SEV_METADATA_GUID",
    "SEV_SECRET_BLOCK_GUID",
    "MetadataSection",
    "Ovmf",
    "SectionType",
    "parse_ovmf",
]

FOUR_GIB = 1 << 32

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_HASH_TABLE_RV_GUID = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_SECRET_BLOCK_GUID = uuid.UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_ES_RESET_BLOCK_GUID = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_METADATA_GUID = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")

_WHAT = "OVMF firmware"
_TRAILER = 18  # u16 size + 16-byte GUID
_FOOTER_END = 32  # the footer entry ends this many bytes before the end of the image
_ASEV_HEADER = 16
_ASEV_DESC = 12


class SectionType(enum.IntEnum):
    """Types of SEV metadata sections (OvmfSevMetadata.asm)."""

    SNP_SEC_MEM = 1
    SNP_SECRETS = 2
    CPUID = 3
    SVSM_CAA = 4
    SNP_KERNEL_HASHES = 0x10


@dataclass(frozen=True)
class MetadataSection:
    """One ASEV descriptor. ``kind`` is the raw u32 type (a :class:`SectionType` value when known)."""

    gpa: int
    size: int
    kind: int

    @property
    def known(self) -> bool:
        return self.kind in SectionType._value2member_map_

    @property
    def name(self) -> str:
        return SectionType(self.kind).name if self.known else f"UNKNOWN_{self.kind:#x}"


@dataclass(frozen=True)
class Ovmf:
    """A parsed OVMF image. ``table`` maps each footer-table GUID to its entry's data bytes."""

    data: bytes = field(repr=False)
    table: MappingProxyType[uuid.UUID, bytes] = field(repr=False)
    metadata_sections: tuple[MetadataSection, ...]
    has_footer_table: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def gpa(self) -> int:
        """Guest physical address of the image's first byte (it ends at 4 GiB)."""
        return FOUR_GIB - len(self.data)

    @property
    def end_gpa(self) -> int:
        return FOUR_GIB

    def _u32_entry(self, guid: uuid.UUID) -> int | None:
        entry = self.table.get(guid)
        if entry is None:
            return None
        return int.from_bytes(entry[:4], "little")

    @property
    def sev_es_reset_eip(self) -> int | None:
        """The AP reset address of the SEV-ES reset block, or None when the image has none."""
        return self._u32_entry(SEV_ES_RESET_BLOCK_GUID)

    @property
    def sev_hashes_table_gpa(self) -> int | None:
        """Where QEMU puts the kernel hashes table (kernel-hashes=on), or None (absent or 0)."""
        gpa = self._u32_entry(SEV_HASH_TABLE_RV_GUID)
        return gpa or None

    @property
    def sev_hashes_table_size(self) -> int | None:
        entry = self.table.get(SEV_HASH_TABLE_RV_GUID)
        if entry is None or not self.sev_hashes_table_gpa:
            return None
        return int.from_bytes(entry[4:8], "little")

    @property
    def has_sev_hashes_table(self) -> bool:
        """True when the firmware reserves a kernel hashes table (needed to measure a kernel)."""
        return self.sev_hashes_table_gpa is not None

    @property
    def sev_secret_block(self) -> tuple[int, int] | None:
        """(gpa, size) of the launch secret area, or None."""
        entry = self.table.get(SEV_SECRET_BLOCK_GUID)
        if entry is None:
            return None
        gpa = int.from_bytes(entry[:4], "little")
        if gpa == 0:
            return None
        return gpa, int.from_bytes(entry[4:8], "little")

    @property
    def has_snp_metadata(self) -> bool:
        """True when the image carries SEV metadata sections (needed for an SNP launch)."""
        return bool(self.metadata_sections)

    def has_section(self, kind: SectionType) -> bool:
        return any(s.kind == kind for s in self.metadata_sections)


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _parse_table(data: bytes) -> tuple[dict[uuid.UUID, bytes], bool]:
    footer_end = len(data) - _FOOTER_END
    footer_start = footer_end - _TRAILER
    if footer_start < 0 or data[footer_start + 2 : footer_end] != FOOTER_GUID.bytes_le:
        return {}, False
    table_size = _u16(data, footer_start)
    if table_size < _TRAILER:
        raise FormatError(f"OVMF footer table size {table_size} is smaller than its header", what=_WHAT)
    body_start = footer_start - (table_size - _TRAILER)
    if body_start < 0:
        raise FormatError(f"OVMF footer table size {table_size} runs past the start of the image", what=_WHAT)
    table: dict[uuid.UUID, bytes] = {}
    end = footer_start
    while end - body_start >= _TRAILER:
        size = _u16(data, end - _TRAILER)
        if size < _TRAILER:
            raise FormatError(f"OVMF footer table entry of size {size} is too small", what=_WHAT)
        if end - size < body_start:
            raise FormatError(f"OVMF footer table entry of size {size} overruns the table", what=_WHAT)
        guid = uuid.UUID(bytes_le=data[end - 16 : end])
        if guid in table:
            raise FormatError(f"OVMF footer table has GUID {guid} twice", what=_WHAT)
        table[guid] = data[end - size : end - _TRAILER]
        end -= size
    if end != body_start:
        raise FormatError(
            f"OVMF footer table has {end - body_start} stray bytes before its first entry", what=_WHAT
        )
    return table, True


def _parse_metadata(data: bytes, entry: bytes) -> tuple[MetadataSection, ...]:
    if len(entry) < 4:
        raise FormatError("OVMF SEV metadata entry is shorter than 4 bytes", what=_WHAT)
    offset = _u32(entry, 0)
    start = len(data) - offset
    if offset < _ASEV_HEADER or start < 0:
        raise FormatError(f"OVMF SEV metadata offset {offset:#x} is outside the image", what=_WHAT)
    header = data[start : start + _ASEV_HEADER]
    if header[:4] != b"ASEV":
        raise FormatError(f"OVMF SEV metadata signature is {header[:4]!r}, not b'ASEV'", what=_WHAT)
    size, version, count = _u32(header, 4), _u32(header, 8), _u32(header, 12)
    if version != 1:
        raise FormatError(f"OVMF SEV metadata version {version} is not supported (1 is)", what=_WHAT)
    need = _ASEV_HEADER + count * _ASEV_DESC
    if size < need or start + need > len(data):
        raise FormatError(f"OVMF SEV metadata of size {size} cannot hold {count} sections", what=_WHAT)
    sections = []
    for i in range(count):
        at = start + _ASEV_HEADER + i * _ASEV_DESC
        sections.append(MetadataSection(gpa=_u32(data, at), size=_u32(data, at + 4), kind=_u32(data, at + 8)))
    return tuple(sections)


def parse_ovmf(data: bytes) -> Ovmf:
    """Parse an OVMF image (bytes of the file). Raises FormatError on malformed tables."""
    data = bytes(data)
    if not data:
        raise FormatError("the OVMF image is empty", what=_WHAT)
    if len(data) > FOUR_GIB:
        raise FormatError("the OVMF image is larger than 4 GiB", what=_WHAT)
    table, has_table = _parse_table(data)
    for guid in (SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID):
        if guid in table and len(table[guid]) < 4:
            raise FormatError(f"OVMF footer table entry {guid} is shorter than 4 bytes", what=_WHAT)
    for guid in (SEV_HASH_TABLE_RV_GUID, SEV_SECRET_BLOCK_GUID):
        if guid in table and 4 < len(table[guid]) < 8:
            raise FormatError(f"OVMF footer table entry {guid} is truncated", what=_WHAT)
    sections: tuple[MetadataSection, ...] = ()
    if SEV_METADATA_GUID in table:
        sections = _parse_metadata(data, table[SEV_METADATA_GUID])
    return Ovmf(
        data=data, table=MappingProxyType(table), metadata_sections=sections, has_footer_table=has_table
    )
