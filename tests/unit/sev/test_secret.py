"""LAUNCH_SECRET: sevctl's known answers byte for byte, the table format, and a decrypt round trip."""

from __future__ import annotations

import base64
import hmac
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError, UsageError
from sevbox.sev import secret as X
from sevbox.sev.session import aes128_ctr

DATA = Path(__file__).resolve().parents[2] / "data" / "sev" / "secret"
TIK = (DATA / "tik1.bin").read_bytes()
TEK = (DATA / "tek1.bin").read_bytes()
# sevctl tests/secretbuild.rs
IV = base64.b64decode("rFR07U3TLH2YnsUj2SVZ7A==")
BLOB = base64.b64decode("TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS")
G1 = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
G2 = uuid.UUID("736869e5-aaaa-4973-92ec-06879ce3da0b")
G3 = uuid.UUID("23058844-597b-42fb-8259-a0f5d9d495af")


def secret(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_sevctl_one_secret() -> None:
    packet = X.build_packet(
        tek=TEK, tik=TIK, measurement=BLOB, iv=IV, table=X.build_table([(G1, secret("secret1.txt"))])
    )
    assert packet.header_b64() == "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    assert packet.payload_b64() == (
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
    )
    assert len(packet.header) == X.HEADER_SIZE and packet.iv == IV


def test_sevctl_two_secrets() -> None:
    table = X.build_table([(G1, secret("secret1.txt")), (G2, secret("secret2.txt"))])
    packet = X.build_packet(tek=TEK, tik=TIK, measurement=BLOB[:32], iv=IV, table=table)
    assert packet.header_b64() == "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="
    assert packet.payload_b64() == (
        "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNUX1ZI3YK"
        "7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe"
    )


def test_sevctl_large_secrets_same_length() -> None:
    a = X.build_table([(G3, secret("secret3.txt"))])
    b = X.build_table([(G3, secret("secret4.txt"))])
    assert len(secret("secret3.txt")) == 16343 and len(secret("secret4.txt")) == 16344
    assert len(a) == len(b) == 16384  # sevctl adds no padding block when already aligned


def test_alias_and_guid() -> None:
    assert X.resolve_guid("luks-key") == G1
    assert X.resolve_guid(str(G2).upper()) == G2
    with pytest.raises(UsageError, match="neither a GUID"):
        X.resolve_guid("disk")
    with pytest.raises(UsageError, match="twice"):
        X.build_table([(G1, b"a"), (G1, b"b")])
    with pytest.raises(UsageError, match="at least one"):
        X.build_table([])


def test_mac_covers_every_field() -> None:
    table = X.build_table([(G1, b"pw")])
    packet = X.build_packet(tek=TEK, tik=TIK, measurement=BLOB[:32], iv=IV, table=table)
    n = struct.pack("<I", len(table))
    msg = b"\x01" + bytes(4) + IV + n + n + packet.payload + BLOB[:32]
    assert hmac.compare_digest(packet.mac, hmac.new(TIK, msg, "sha256").digest())
    other = X.build_packet(tek=TEK, tik=TIK, measurement=bytes(32), iv=IV, table=table)
    assert other.mac != packet.mac and other.payload == packet.payload


@settings(max_examples=60)
@given(
    st.lists(st.tuples(st.uuids(), st.binary(max_size=300)), min_size=1, max_size=5, unique_by=lambda t: t[0])
)
def test_table_round_trip(secrets: list[tuple[uuid.UUID, bytes]]) -> None:
    table = X.build_table(secrets)
    assert len(table) % 16 == 0
    packet = X.build_packet(tek=TEK, tik=TIK, measurement=BLOB, iv=IV, table=table)
    assert X.parse_table(aes128_ctr(TEK, IV, packet.payload)) == secrets


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_parse_table_never_crashes(data: bytes) -> None:
    try:
        X.parse_table(data)
    except FormatError:
        pass


@settings(max_examples=100)
@given(st.integers(0, 63), st.integers(1, 255))
def test_parse_table_mutated(pos: int, xor: int) -> None:
    table = bytearray(X.build_table([(G1, b"secret-one"), (G2, b"two")]))
    table[pos % len(table)] ^= xor
    try:
        X.parse_table(bytes(table))
    except FormatError:
        pass


def test_bad_sizes() -> None:
    table = X.build_table([(G1, b"x")])
    with pytest.raises(FormatError, match="TEK"):
        X.build_packet(tek=TEK[:15], tik=TIK, measurement=BLOB, iv=IV, table=table)
    with pytest.raises(FormatError, match="IV"):
        X.build_packet(tek=TEK, tik=TIK, measurement=BLOB, iv=IV + b"x", table=table)
    with pytest.raises(FormatError, match="measurement"):
        X.build_packet(tek=TEK, tik=TIK, measurement=BLOB[:31], iv=IV, table=table)


def test_qemu_args() -> None:
    packet = X.build_packet(tek=TEK, tik=TIK, measurement=BLOB, iv=IV, table=X.build_table([(G1, b"k")]))
    args = X.qemu_inject_args(packet)
    assert args == {"packet-header": packet.header_b64(), "secret": packet.payload_b64()}
    assert X.qemu_inject_args(packet, gpa=0x80_0000)["gpa"] == 0x80_0000
    with pytest.raises(UsageError):
        X.qemu_inject_args(packet, gpa=-1)
