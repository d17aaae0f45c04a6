"""The kernel hashes table as QEMU builds it (kernel-hashes=on)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.sev import hashes as H


def test_table_layout() -> None:
    kh = H.KernelHashes.of(kernel=b"K", initrd=b"I", append="a b")
    t = H.build_table(kh)
    assert len(t) == 176 == H.TABLE_PADDED_LEN
    assert t[:16] == H.TABLE_GUID.bytes_le and struct.unpack_from("<H", t, 16)[0] == 168
    # cmdline, initrd, kernel in that order, each GUID | u16 50 | SHA-256
    assert t[18:34] == H.CMDLINE_GUID.bytes_le and struct.unpack_from("<H", t, 34)[0] == 50
    assert t[36:68] == hashlib.sha256(b"a b\x00").digest()
    assert t[68:84] == H.INITRD_GUID.bytes_le and t[86:118] == hashlib.sha256(b"I").digest()
    assert t[118:134] == H.KERNEL_GUID.bytes_le and t[136:168] == hashlib.sha256(b"K").digest()
    assert t[168:] == bytes(8)


def test_missing_initrd_and_cmdline() -> None:
    kh = H.KernelHashes.of(kernel=b"")
    assert kh.initrd == hashlib.sha256(b"").digest()
    assert kh.cmdline == hashlib.sha256(b"\x00").digest()
    assert H.KernelHashes.of(kernel=b"", append="") == kh


def test_page_places_table_at_offset() -> None:
    kh = H.KernelHashes.of(kernel=b"x")
    page = H.build_page(kh, 0xC00)
    assert len(page) == 4096 and page[0xC00 : 0xC00 + 176] == H.build_table(kh)
    assert not any(page[:0xC00]) and not any(page[0xC00 + 176 :])
    with pytest.raises(FormatError):
        H.build_page(kh, 4096 - 100)


def test_round_trip() -> None:
    kh = H.KernelHashes.of(kernel=b"k", initrd=b"i", append="c")
    assert H.parse_table(H.build_table(kh)) == kh


def test_bad_digest_length() -> None:
    with pytest.raises(ValueError):
        H.KernelHashes(kernel=b"", initrd=bytes(32), cmdline=bytes(32))


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_parse_random(data: bytes) -> None:
    try:
        H.parse_table(data)
    except FormatError:
        pass


@settings(max_examples=150)
@given(st.integers(0, 175), st.integers(0, 255))
def test_parse_mutated(at: int, value: int) -> None:
    t = bytearray(H.build_table(H.KernelHashes.of(kernel=b"k")))
    t[at] = value
    try:
        got = H.parse_table(bytes(t))
    except FormatError:
        return
    assert isinstance(got, H.KernelHashes)
