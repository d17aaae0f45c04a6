"""SEV certificates and the platform chain: real Naples and Rome chains, built-in CAs, tampering."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError, UsageError, VerificationError
from sevbox.sev import certs as C

DATA = Path(__file__).resolve().parents[2] / "data" / "sev"
NAMES = ("pdh", "pek", "oca", "cek")


def chain(product: str) -> list[bytes]:
    return [(DATA / product / f"{n}.cert").read_bytes() for n in NAMES]


def full_export(product: str) -> bytes:
    ask, ark = C.builtin_ca(product)
    return b"".join(chain(product)) + ask + ark


ARK_KEY_IDS = {
    "naples": "1bb987c359494606b174945601c9ea5b",
    "rome": "e6002122fb58419399d15fee7b131351",
    "milan": "94c38e4177d0479292a7ae671d083fb6",
    "genoa": "9f9d4a8fe761456599f6946c4c010f3a",
    "turin": "d05c3a8bde484904b49552422ceb3942",
}


@pytest.mark.parametrize("product", C.PRODUCTS)
def test_builtin_ca_verifies(product: str) -> None:
    ask_raw, ark_raw = C.builtin_ca(product)
    ark, ask = C.parse_ca_cert(ark_raw), C.parse_ca_cert(ask_raw)
    assert ark.key_id.hex() == ARK_KEY_IDS[product] == ark.certifying_id.hex()
    assert ask.certifying_id == ark.key_id
    assert (ark.usage, ask.usage) == (C.Usage.ARK, C.Usage.ASK)
    assert ark.modulus_bits == (2048 if product == "naples" else 4096)
    report = C.verify_chain(None, None, None, None, ask=ask_raw, ark=ark_raw, ca_from_user=True)
    assert [(x.name, x.ok) for x in report.links] == [("ARK -> ASK", True), ("ARK self-signed", True)]


def test_builtin_unknown_product() -> None:
    with pytest.raises(UsageError, match="unknown product"):
        C.builtin_ca("bergamo")
    with pytest.raises(UsageError, match="unknown product"):
        C.verify_chain(*chain("rome"), product="bergamo")


@pytest.mark.parametrize("product", ["naples", "rome"])
def test_real_chain_verifies(product: str) -> None:
    report = C.verify_chain(*chain(product))
    assert report.ok, report.failed
    assert report.product == product
    assert [x.name for x in report.links] == [
        "PEK -> PDH",
        "OCA self-signed",
        "OCA -> PEK",
        "CEK -> PEK",
        "ASK -> CEK",
        "ARK -> ASK",
        "ARK self-signed",
    ]
    assert report.ca_source == "built-in"


def test_real_chain_fields() -> None:
    pdh, pek, oca, cek = (C.parse_sev_cert(b) for b in chain("rome"))
    assert (pdh.usage, pdh.algo) == (C.Usage.PDH, C.Algo.ECDH_SHA256)
    assert (pek.usage, pek.algo) == (C.Usage.PEK, C.Algo.ECDSA_SHA256)
    assert (oca.usage, cek.usage) == (C.Usage.OCA, C.Usage.CEK)
    assert (pdh.api_major, pdh.api_minor, cek.api_minor) == (0, 22, 14)
    assert {s.usage for s in pek.sigs} == {C.Usage.OCA, C.Usage.CEK}
    assert cek.sigs[0].algo == C.Algo.RSA_SHA384
    assert C.parse_sev_cert(chain("naples")[3]).sigs[0].algo == C.Algo.RSA_SHA256
    assert pdh.describe()["usage"] == "PDH"


def test_rome_ask_does_not_verify_naples_cek() -> None:
    report = C.verify_chain(*chain("naples"), product="rome")
    assert not report.ok
    assert [x.name for x in report.failed] == ["ASK -> CEK"]
    # and the other way round
    assert [x.name for x in C.verify_chain(*chain("rome"), product="naples").failed] == ["ASK -> CEK"]


def test_mixed_chain_fails_at_the_seam() -> None:
    naples, rome = chain("naples"), chain("rome")
    report = C.verify_chain(rome[0], naples[1], naples[2], naples[3])
    assert [x.name for x in report.failed] == ["PEK -> PDH"]


@pytest.mark.parametrize("product", ["naples", "rome"])
def test_full_export_verifies(product: str) -> None:
    export = C.parse_export(full_export(product))
    report = C.verify_chain(export.pdh, export.pek, export.oca, export.cek, ask=export.ask, ark=export.ark)
    assert report.ok, report.failed
    assert report.links[-1].name == "ARK is AMD's"
    assert report.ca_source == "export"
    pdh = C.verified_pdh(export)
    assert pdh.usage == C.Usage.PDH


def _flip_positions(length: int, stride: int) -> list[int]:
    # every byte of every certificate header and signature-slot header, plus a stride through the rest
    heads = {
        base + k
        for base in range(0, 4 * C.SEV_CERT_SIZE, C.SEV_CERT_SIZE)
        for start, n in ((0, 0x20), (0x414, 8), (0x61C, 8))
        for k in range(start, start + n)
    }
    return sorted(heads | set(range(0, length, stride)) | {length - 1})


@pytest.mark.parametrize(("product", "stride"), [("naples", 23), ("rome", 29)])
def test_every_flipped_byte_fails_and_names_a_link(product: str, stride: int) -> None:
    """A sample here; bench/bench_sev_owner.py flips every byte of both chains (all fail)."""
    blob = full_export(product)
    n = C.SEV_CERT_SIZE
    seen: set[str] = set()
    for pos in _flip_positions(len(blob), stride):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x10
        e = C.parse_export(bytes(tampered))
        report = C.verify_chain(e.pdh, e.pek, e.oca, e.cek, ask=e.ask, ark=e.ark)
        assert not report.ok, f"flip at {pos:#x} went unnoticed"
        names = {x.name for x in report.failed}
        seen |= names
        # the certificate that holds the byte is named by a failed link
        if pos < 4 * n:
            which = ("PDH", "PEK", "OCA", "CEK")[pos // n]
            assert any(which in name for name in names), (pos, names)
        elif pos < 4 * n + (len(blob) - 4 * n) // 2:
            assert "ARK -> ASK" in names, (pos, names)
        else:
            assert names & {"ARK self-signed", "ARK is AMD's"}, (pos, names)
    assert {"PEK -> PDH", "OCA self-signed", "OCA -> PEK", "CEK -> PEK", "ASK -> CEK", "ARK -> ASK"} <= seen


def test_flipped_pdh_is_refused_by_the_recipe() -> None:
    blob = bytearray(full_export("rome"))
    blob[0x100] ^= 1
    with pytest.raises(VerificationError) as err:
        C.verified_pdh(C.parse_export(bytes(blob)))
    assert err.value.check == "PEK -> PDH"


def _forged_ca(bits: int = 2048) -> tuple[bytes, bytes]:
    """A self-consistent ARK/ASK pair that is not AMD's."""

    def cert(kid: bytes, cid: bytes, usage: int, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey) -> bytes:
        nums = key.public_key().public_numbers()
        size = bits // 8
        body = (
            struct.pack("<I", 1) + kid + cid + struct.pack("<I", usage) + bytes(16)
            + struct.pack("<II", bits, bits)
            + nums.e.to_bytes(size, "little") + nums.n.to_bytes(size, "little")
        )  # fmt: skip
        sig = signer.sign(body, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        return body + int.from_bytes(sig, "big").to_bytes(size, "little")

    ark_key = rsa.generate_private_key(65537, bits)
    ask_key = rsa.generate_private_key(65537, bits)
    ark = cert(b"A" * 16, b"A" * 16, C.Usage.ARK, ark_key, ark_key)
    ask = cert(b"B" * 16, b"A" * 16, C.Usage.ASK, ask_key, ark_key)
    return ask, ark


def test_forged_ca_in_export_is_not_trusted() -> None:
    ask, ark = _forged_ca()
    pdh, pek, oca, cek = chain("naples")
    report = C.verify_chain(pdh, pek, oca, cek, ask=ask, ark=ark)
    names = {x.name: x.ok for x in report.links}
    assert names["ARK -> ASK"] and names["ARK self-signed"]  # self-consistent...
    assert not names["ARK is AMD's"] and not names["ASK -> CEK"]  # ...but not AMD's
    # given explicitly with --ca, the user's ARK is the anchor (the CEK still fails: wrong ASK)
    report = C.verify_chain(pdh, pek, oca, cek, ask=ask, ark=ark, ca_from_user=True)
    assert "ARK is AMD's" not in {x.name for x in report.links}
    assert [x.name for x in report.failed] == ["ASK -> CEK"]


def test_lone_cek_and_oca() -> None:
    cek = chain("rome")[3]
    report = C.verify_chain(None, None, None, cek)
    assert report.ok and report.product == "rome"
    assert [x.name for x in report.links] == ["ASK -> CEK", "ARK -> ASK", "ARK self-signed"]
    report = C.verify_chain(None, None, chain("rome")[2], None)
    assert [(x.name, x.ok) for x in report.links] == [("OCA self-signed", True)]


def test_unknown_cek_names_the_link() -> None:
    cek = bytearray(chain("rome")[3])
    cek[0x500] ^= 1
    report = C.verify_chain(None, None, None, bytes(cek))
    assert report.product is None
    assert [x.name for x in report.failed] == ["ASK -> CEK"]
    assert "--product" in report.failed[0].reason


def test_wrong_certificate_in_a_position() -> None:
    _pdh, pek, oca, cek = chain("rome")
    report = C.verify_chain(pek, pek, oca, cek)
    assert "expected a PDH" in report.failed[0].reason


def test_own_oca_roundtrip() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    oca = C.encode_sev_cert(C.Usage.OCA, C.Algo.ECDSA_SHA256, key.public_key(), api=(0, 22))
    assert not C.verify_chain(None, None, oca, None).ok  # unsigned
    signed = C.sign_sev_cert(oca, C.Usage.OCA, key)
    assert C.verify_chain(None, None, signed, None).ok
    twice = C.sign_sev_cert(signed, C.Usage.OCA, key)
    # a second OCA signature in the other slot is not an expected layout
    assert not C.verify_chain(None, None, twice, None).ok
    with pytest.raises(FormatError, match="both signature slots"):
        C.sign_sev_cert(twice, C.Usage.OCA, key)


def test_parse_errors() -> None:
    pdh = chain("rome")[0]
    with pytest.raises(FormatError, match="0x824|2084"):
        C.parse_sev_cert(pdh[:-1])
    with pytest.raises(FormatError, match="version"):
        C.parse_sev_cert(b"\x02" + pdh[1:])
    ask, ark = C.builtin_ca("rome")
    with pytest.raises(FormatError, match="must be 1600"):
        C.parse_ca_cert(ark + b"\x00")
    with pytest.raises(FormatError, match="truncated"):
        C.parse_ca_cert(ark[:10])
    with pytest.raises(FormatError, match="key sizes"):
        C.parse_ca_cert(ark[:0x38] + struct.pack("<II", 1024, 1024) + ark[0x40:])
    assert C.parse_ca_chain(ask + ark) == (ask, ark)
    with pytest.raises(FormatError, match="ASK|ARK"):
        C.parse_ca_chain(ask + ark[:-1])
    with pytest.raises(FormatError, match="PDH|PEK|OCA|CEK"):
        C.parse_export(b"".join(chain("rome"))[:-1])
    with pytest.raises(FormatError, match="expected ASK|ARK"):
        C.parse_export(b"".join(chain("rome")) + ask)
    assert C.parse_export(b"".join(chain("rome"))).ask is None


@settings(max_examples=150)
@given(st.binary(max_size=4200))
def test_random_bytes_never_crash_parsers(data: bytes) -> None:
    for parse in (C.parse_sev_cert, C.parse_ca_cert, C.parse_ca_chain, C.parse_export):
        try:
            parse(data)
        except FormatError:
            pass


@settings(max_examples=100)
@given(st.integers(0, C.SEV_CERT_SIZE - 1), st.binary(min_size=1, max_size=64), st.sampled_from(range(4)))
def test_mutated_chain_gives_a_report_not_a_crash(pos: int, junk: bytes, which: int) -> None:
    parts = chain("naples")
    target = bytearray(parts[which])
    target[pos : pos + len(junk)] = junk[: C.SEV_CERT_SIZE - pos]
    parts[which] = bytes(target[: C.SEV_CERT_SIZE])
    report = C.verify_chain(*parts, product="naples")
    if parts[which] != chain("naples")[which]:
        assert not report.ok
