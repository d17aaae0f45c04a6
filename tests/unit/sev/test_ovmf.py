"""OVMF footer table and SEV metadata parsing, on real firmware suffixes and on built/mutated images."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.sev import ovmf as O

DATA = Path(__file__).resolve().parents[2] / "data" / "measure"
AMDSEV = (DATA / "ovmf_AmdSev_suffix.bin").read_bytes()
OVMFX64 = (DATA / "ovmf_OvmfX64_suffix.bin").read_bytes()
SEVCTL = (DATA / "ovmf_sevctl_amdsev_trimmed.bin").read_bytes()


def build_image(entries: list[tuple[uuid.UUID, bytes]], *, prefix: bytes = b"", size: int = 4096) -> bytes:
    """An image ending with a footer table holding ``entries`` (first entry nearest the footer)."""
    table = b""
    for guid, data in entries:
        table = data + struct.pack("<H", len(data) + 18) + guid.bytes_le + table
    footer = struct.pack("<H", len(table) + 18) + O.FOOTER_GUID.bytes_le
    tail = table + footer + b"\xee" * 32
    body = prefix + bytes(max(0, size - len(prefix) - len(tail)))
    return body + tail


def test_amdsev_suffix_layout() -> None:
    o = O.parse_ovmf(AMDSEV)
    assert o.gpa == 0xFFFFF000
    assert o.has_footer_table
    assert o.sev_es_reset_eip == 0x80B004
    assert o.has_sev_hashes_table and o.sev_hashes_table_gpa == 0x810C00
    assert o.has_snp_metadata
    got = [(s.kind, s.gpa, s.size) for s in o.metadata_sections]
    T = O.SectionType
    assert got == [
        (T.SNP_SEC_MEM, 0x800000, 0x9000),
        (T.SNP_SEC_MEM, 0x80A000, 0x3000),
        (T.SNP_SECRETS, 0x80D000, 0x1000),
        (T.CPUID, 0x80E000, 0x1000),
        (T.SVSM_CAA, 0x80F000, 0x1000),
        (T.SNP_KERNEL_HASHES, 0x810000, 0x1000),
        (T.SNP_SEC_MEM, 0x811000, 0xF000),
    ]
    assert o.has_section(T.SNP_KERNEL_HASHES)


def test_ovmfx64_suffix_has_no_hashes_table() -> None:
    o = O.parse_ovmf(OVMFX64)
    assert O.SEV_HASH_TABLE_RV_GUID in o.table  # present but zero
    assert not o.has_sev_hashes_table and o.sev_hashes_table_gpa is None
    assert o.has_snp_metadata and not o.has_section(O.SectionType.SNP_KERNEL_HASHES)
    assert o.sev_secret_block is None


def test_sevctl_rhel9_amdsev_has_no_snp_metadata() -> None:
    o = O.parse_ovmf(SEVCTL)
    assert o.sev_es_reset_eip == 0x80B004
    assert o.has_sev_hashes_table
    assert not o.has_snp_metadata and o.metadata_sections == ()
    assert o.sev_secret_block is not None


def test_gpa_follows_size() -> None:
    big = bytes(12288) + AMDSEV
    o = O.parse_ovmf(big)
    assert o.gpa == O.FOUR_GIB - len(big) and o.end_gpa == O.FOUR_GIB
    assert o.metadata_sections == O.parse_ovmf(AMDSEV).metadata_sections


def test_no_footer_is_not_an_error() -> None:
    o = O.parse_ovmf(bytes(4096))
    assert not o.has_footer_table and o.table == {}
    assert o.sev_es_reset_eip is None and not o.has_sev_hashes_table and not o.has_snp_metadata


def test_built_image_round_trips() -> None:
    img = build_image(
        [
            (O.SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", 0x1234)),
            (O.SEV_HASH_TABLE_RV_GUID, struct.pack("<II", 0x5000, 0x400)),
        ]
    )
    o = O.parse_ovmf(img)
    assert o.sev_es_reset_eip == 0x1234
    assert o.sev_hashes_table_gpa == 0x5000 and o.sev_hashes_table_size == 0x400


def test_metadata_from_built_image() -> None:
    sections = [(0x800000, 0x1000, 1), (0x801000, 0x1000, 0x77)]
    asev = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    asev += b"".join(struct.pack("<III", *s) for s in sections)
    prefix = bytes(64) + asev
    img = build_image([(O.SEV_METADATA_GUID, struct.pack("<I", 4096 - 64))], prefix=prefix)
    o = O.parse_ovmf(img)
    assert [(s.gpa, s.size, s.kind) for s in o.metadata_sections] == sections
    assert o.metadata_sections[1].name == "UNKNOWN_0x77" and not o.metadata_sections[1].known


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-50] + struct.pack("<H", 3) + b[-48:], "smaller than its header"),
        (lambda b: b[:-50] + struct.pack("<H", 0xFFFF) + b[-48:], "past the start"),
        (lambda b: b"", "empty"),
    ],
)
def test_bad_footer(mutate: object, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        O.parse_ovmf(mutate(AMDSEV))  # type: ignore[operator]


def test_bad_entry_size() -> None:
    img = bytearray(build_image([(O.SEV_ES_RESET_BLOCK_GUID, b"\x00" * 4)]))
    # the entry's size field sits just before its GUID, 18+32+18 bytes from the end
    at = len(img) - 32 - 18 - 18
    img[at : at + 2] = struct.pack("<H", 5)
    with pytest.raises(FormatError, match="too small"):
        O.parse_ovmf(bytes(img))


def test_bad_metadata_signature_and_version() -> None:
    entry = [(O.SEV_METADATA_GUID, struct.pack("<I", 4096 - 64))]
    bad_sig = build_image(entry, prefix=bytes(64) + b"XSEV" + struct.pack("<III", 16, 1, 0))
    with pytest.raises(FormatError, match="signature"):
        O.parse_ovmf(bad_sig)
    bad_ver = build_image(entry, prefix=bytes(64) + b"ASEV" + struct.pack("<III", 16, 2, 0))
    with pytest.raises(FormatError, match="version"):
        O.parse_ovmf(bad_ver)
    too_many = build_image(entry, prefix=bytes(64) + b"ASEV" + struct.pack("<III", 16, 1, 1000))
    with pytest.raises(FormatError, match="cannot hold"):
        O.parse_ovmf(too_many)
    outside = build_image([(O.SEV_METADATA_GUID, struct.pack("<I", 99999))])
    with pytest.raises(FormatError, match="outside"):
        O.parse_ovmf(outside)


@settings(max_examples=150)
@given(st.binary(max_size=300))
def test_random_bytes_parse_or_format_error(data: bytes) -> None:
    try:
        o = O.parse_ovmf(data)
    except FormatError:
        return
    assert o.size == len(data)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_real_suffix_parses_or_format_error(flips: list[tuple[int, int]]) -> None:
    img = bytearray(AMDSEV)
    for at, value in flips:
        img[at] = value
    try:
        o = O.parse_ovmf(bytes(img))
    except FormatError as err:
        assert err.what == "OVMF firmware"
        return
    for s in o.metadata_sections:
        assert 0 <= s.gpa < 1 << 32 and 0 <= s.size < 1 << 32


_GUIDS = st.sampled_from(
    [O.SEV_ES_RESET_BLOCK_GUID, O.SEV_HASH_TABLE_RV_GUID, O.SEV_SECRET_BLOCK_GUID, uuid.UUID(int=7)]
)


@settings(max_examples=100)
@given(st.dictionaries(_GUIDS, st.binary(min_size=8, max_size=40), max_size=4), st.integers(0, 3))
def test_built_tables_round_trip(entries: dict[uuid.UUID, bytes], pad_pages: int) -> None:
    img = build_image(list(entries.items()), size=4096 * (pad_pages + 1))
    o = O.parse_ovmf(img)
    assert dict(o.table) == entries
    assert o.gpa == O.FOUR_GIB - len(img)
    if O.SEV_ES_RESET_BLOCK_GUID in entries:
        assert o.sev_es_reset_eip == int.from_bytes(entries[O.SEV_ES_RESET_BLOCK_GUID][:4], "little")
