"""SEV (u32) and SNP (u64) guest policies: decode/encode round trips, every bit, reserved bits, names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError, UsageError
from sevbox.sev.policy import SevPolicy, SnpPolicy

SNP_VALID_MASK = (1 << 26) - 1


# --- SEV -------------------------------------------------------------------------------------------


def test_sev_known_values() -> None:
    # sevctl's measurement vectors use 0x03 (SEV) and 0x05 (SEV-ES); libvirt's default is 0x33.
    p = SevPolicy.decode(0x03)
    assert p.nodbg and p.noks and not p.es and not p.allows_debug
    p = SevPolicy.decode(0x05)
    assert p.nodbg and p.es and not p.noks and p.requires_es
    p = SevPolicy.decode(0x33)
    assert p.names() == ["NODBG", "NOKS", "DOMAIN", "SEV"]
    assert SevPolicy.decode(0).allows_debug


def test_sev_api_fields() -> None:
    p = SevPolicy.decode(0x0E16_0001)
    assert (p.api_major, p.api_minor, p.nodbg) == (0x16, 0x0E, True)
    assert p.encode() == 0x0E16_0001


@given(st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_sev_round_trip(value: int) -> None:
    assert SevPolicy.decode(value).encode() == value


def test_sev_each_bit_named() -> None:
    for bit, name in enumerate(["NODBG", "NOKS", "ES", "NOSEND", "DOMAIN", "SEV"]):
        p = SevPolicy.decode(1 << bit)
        assert p.names() == [name]
        assert SevPolicy.from_names([name]).encode() == 1 << bit
        explained = dict(p.explain())
        assert explained[name].startswith(f"bit {bit} = 1")


def test_sev_reserved_kept_and_flagged() -> None:
    p = SevPolicy.decode(1 << 6)
    assert p.reserved == 1
    assert "must be zero" in dict(p.explain())["reserved"]
    assert "must be zero" not in dict(SevPolicy.decode(0).explain())["reserved"]


def test_sev_explain_covers_every_field() -> None:
    fields = [f for f, _ in SevPolicy.decode(0xFFFF_FFFF).explain()]
    assert fields == ["NODBG", "NOKS", "ES", "NOSEND", "DOMAIN", "SEV", "reserved", "API_MAJOR", "API_MINOR"]


def test_sev_from_names() -> None:
    assert SevPolicy.from_names(["nodbg", "NOKS", "es"]).encode() == 0x07
    assert SevPolicy.from_names(["NODBG", "api_major=1", "API-MINOR=0x10"]).encode() == 0x1001_0001
    with pytest.raises(UsageError, match="unknown SEV policy name"):
        SevPolicy.from_names(["NODEBUG"])
    with pytest.raises(UsageError, match="0-255"):
        SevPolicy.from_names(["API_MAJOR=256"])
    with pytest.raises(UsageError, match="needs a number"):
        SevPolicy.from_names(["API_MAJOR=x"])
    with pytest.raises(UsageError):
        SevPolicy.from_names(["ES=1"])


@pytest.mark.parametrize("value", [-1, 1 << 32, 2**64])
def test_sev_out_of_range(value: int) -> None:
    with pytest.raises(FormatError, match="does not fit"):
        SevPolicy.decode(value)


def test_sev_not_an_int() -> None:
    with pytest.raises(FormatError):
        SevPolicy.decode("3")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        SevPolicy.decode(True)


# --- SNP -------------------------------------------------------------------------------------------


def test_snp_default_policy() -> None:
    # 0x30000 is the policy of the real Milan report in shared/vectors and sev-snp-measure's default.
    p = SnpPolicy.decode(0x30000)
    assert p.smt and not p.debug and not p.migrate_ma
    assert not p.allows_debug and not p.allows_migration_agent
    assert p.names() == ["SMT"]
    assert SnpPolicy.from_names(["SMT"]).encode() == 0x30000
    assert SnpPolicy().encode() == 0x20000


def test_snp_abi_fields() -> None:
    p = SnpPolicy.decode(0x2_0137)
    assert (p.abi_major, p.abi_minor) == (0x01, 0x37)
    assert SnpPolicy.from_names(["ABI_MAJOR=1", "abi_minor=55"]).encode() == 0x2_0137
    assert SnpPolicy.from_names(["API_MAJOR=1"]).abi_major == 1


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("SMT", 16),
        ("MIGRATE_MA", 18),
        ("DEBUG", 19),
        ("SINGLE_SOCKET", 20),
        ("CXL_ALLOW", 21),
        ("MEM_AES_256_XTS", 22),
        ("RAPL_DIS", 23),
        ("CIPHERTEXT_HIDING", 24),
        ("PAGE_SWAP_DISABLE", 25),
    ],
)
def test_snp_each_bit(name: str, bit: int) -> None:
    p = SnpPolicy.decode(0x20000 | 1 << bit)
    assert p.names() == [name]
    assert SnpPolicy.from_names([name.lower()]).encode() == 0x20000 | 1 << bit
    assert dict(p.explain())[name].startswith(f"bit {bit} = 1")


def test_snp_aliases_and_properties() -> None:
    p = SnpPolicy.from_names(["ciphertext-hiding-dram", "migrate_ma", "debug"])
    assert p.ciphertext_hiding and p.allows_migration_agent and p.allows_debug


@given(st.integers(min_value=0, max_value=SNP_VALID_MASK))
def test_snp_round_trip(value: int) -> None:
    value |= 1 << 17
    assert SnpPolicy.decode(value).encode() == value


@settings(max_examples=100)
@given(st.integers(min_value=26, max_value=63), st.integers(min_value=0, max_value=SNP_VALID_MASK))
def test_snp_reserved_high_bits_rejected(bit: int, low: int) -> None:
    with pytest.raises(FormatError, match="reserved bits"):
        SnpPolicy.decode(low | 1 << 17 | 1 << bit)


def test_snp_bit17_must_be_one() -> None:
    with pytest.raises(FormatError, match="bit 17"):
        SnpPolicy.decode(0x10000)


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_snp_out_of_range(value: int) -> None:
    with pytest.raises(FormatError):
        SnpPolicy.decode(value)


def test_snp_unknown_name() -> None:
    with pytest.raises(UsageError, match="unknown SNP policy name"):
        SnpPolicy.from_names(["NODBG"])


def test_snp_explain_covers_every_bit() -> None:
    fields = [f for f, _ in SnpPolicy.decode(0x3FF_FFFF).explain()]
    assert fields == [
        "ABI_MINOR",
        "ABI_MAJOR",
        "SMT",
        "reserved",
        "MIGRATE_MA",
        "DEBUG",
        "SINGLE_SOCKET",
        "CXL_ALLOW",
        "MEM_AES_256_XTS",
        "RAPL_DIS",
        "CIPHERTEXT_HIDING",
        "PAGE_SWAP_DISABLE",
        "reserved",
    ]


def test_to_json() -> None:
    assert SnpPolicy.decode(0x30000).to_json()["value"] == "0x30000"
    assert SevPolicy.decode(0x33).to_json()["names"] == ["NODBG", "NOKS", "DOMAIN", "SEV"]
