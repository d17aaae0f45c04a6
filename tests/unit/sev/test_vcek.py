"""VCEK/VLEK certificates: strict DER reading, AMD extensions, built-in chains, RSA-PSS links."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.sev import snpkit

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.vcek import (
    builtin_chain,
    canonical_product,
    endorsement_extensions,
    parse_certificate,
    parse_certificates,
    parse_product_chain,
    verify_link,
)

ARK_SHA256 = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
VECTOR_CHAINS = {
    "Milan": ("gsg_ask_ark_milan.pem", "gsg_ask_ark_milan_vlek.pem"),
    "Genoa": ("gsg_ask_ark_genoa.pem", "gsg_ask_ark_genoa_vlek.pem"),
    "Turin": ("gsg_ask_ark_turin_vcek.pem", "gsg_ask_ark_turin_vlek.pem"),
}


def test_real_milan_vceks_parse_with_serial_zero() -> None:
    # pytest turns warnings into errors: a library warning about serial 0 would fail this test.
    for name, spl, hw in (
        ("virtee_milan_vcek.der", (3, 0, 8, 115), "d49554ec717f4e5b"),
        ("gsg_milan_vcek.der", (2, 0, 5, 68), "3ac3fe21e13fb099"),
    ):
        cert = parse_certificate(snpkit.data(name))
        assert cert.serial_number == 0
        assert cert.subject_cn == "SEV-VCEK" and cert.issuer_cn == "SEV-Milan"
        ext = endorsement_extensions(cert)
        assert (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl) == spl
        assert ext.product_name == "Milan-B0" and ext.product == "Milan"
        assert ext.kind == "VCEK" and ext.fmc_spl is None
        assert ext.hwid is not None and len(ext.hwid) == 64 and ext.hwid.hex().startswith(hw)
        assert ext.tcb().parts() == dict(zip(("bootloader", "tee", "snp", "microcode"), spl, strict=True))


def test_real_turin_vcek_extensions() -> None:
    cert = parse_certificate(snpkit.data("virtee_turin_vcek.der"))
    ext = endorsement_extensions(cert)
    assert ext.product_name == "Turin" and ext.product == "Turin"
    assert ext.hwid == bytes.fromhex("1e550a8ee5cf9f4d")
    assert ext.fmc_spl == 0 and ext.spl_4 is None
    assert ext.ucode_spl == 9
    tcb = ext.tcb()
    assert tcb.turin and tcb.parts() == {"fmc": 0, "bootloader": 0, "tee": 0, "snp": 0, "microcode": 9}
    assert ext.to_json()["fmcSPL"] == 0


def test_pem_and_der_give_the_same_certificate() -> None:
    der = snpkit.data("virtee_milan_vcek.der")
    cert = parse_certificate(der)
    again = parse_certificate(cert.to_pem().encode())
    assert again.der == der and again.tbs == cert.tbs
    crlf = cert.to_pem().replace("\n", "\r\n").encode()
    assert parse_certificate(crlf).der == der


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_builtin_chains_verify_and_match_the_vectors(product: str) -> None:
    chain = builtin_chain(product)
    assert chain.ark.fingerprint == ARK_SHA256[product]
    assert chain.ask is not None and chain.asvk is not None
    assert chain.ask.subject_cn == f"SEV-{product}" and chain.asvk.subject_cn == f"SEV-VLEK-{product}"
    verify_link(chain.ark, chain.ark)
    verify_link(chain.ask, chain.ark)
    verify_link(chain.asvk, chain.ark)
    vcek_file, vlek_file = VECTOR_CHAINS[product]
    from_vectors = parse_product_chain(snpkit.data(vcek_file))
    assert from_vectors.ark.der == chain.ark.der and from_vectors.ask is not None
    assert from_vectors.ask.der == chain.ask.der
    vlek_vectors = parse_product_chain(snpkit.data(vlek_file))
    assert vlek_vectors.asvk is not None and vlek_vectors.asvk.der == chain.asvk.der


@pytest.mark.parametrize(
    ("file", "product"),
    [
        ("virtee_cert_chain_milan.pem", "Milan"),
        ("virtee_cert_chain_turin.pem", "Turin"),  # CRLF line ends
        ("gsg_milan_cert_chain.pem", "Milan"),
        ("gsg_milan_vlek_cert_chain.pem", "Milan"),
    ],
)
def test_kds_cert_chain_answers_parse(file: str, product: str) -> None:
    chain = parse_product_chain(snpkit.data(file))
    assert chain.product == product
    mid = chain.ask or chain.asvk
    assert mid is not None
    verify_link(mid, chain.ark)


def test_real_vceks_chain_to_their_product() -> None:
    milan, turin = builtin_chain("milan"), builtin_chain("turin")
    assert milan.ask is not None and turin.ask is not None
    verify_link(parse_certificate(snpkit.data("virtee_milan_vcek.der")), milan.ask)
    verify_link(parse_certificate(snpkit.data("gsg_milan_vcek.der")), milan.ask)
    verify_link(parse_certificate(snpkit.data("virtee_turin_vcek.der")), turin.ask)
    with pytest.raises(VerificationError, match="names issuer 'SEV-Milan'"):
        verify_link(parse_certificate(snpkit.data("virtee_milan_vcek.der")), turin.ask)
    with pytest.raises(VerificationError):
        verify_link(milan.ask, turin.ark)


def test_same_name_wrong_key_fails_the_signature() -> None:
    ca = snpkit.make_ca("Milan")  # a fake "SEV-Milan" ASK: same name, other key
    fake_ask = parse_certificate(ca.ask)
    assert fake_ask.subject == builtin_chain("Milan").ask.subject  # type: ignore[union-attr]
    with pytest.raises(VerificationError, match="does not verify") as info:
        verify_link(parse_certificate(snpkit.data("virtee_milan_vcek.der")), fake_ask, check="ASK -> VCEK")
    assert info.value.check == "ASK -> VCEK"


def test_every_flipped_byte_of_a_vcek_is_caught() -> None:
    der = snpkit.data("virtee_milan_vcek.der")
    ask = builtin_chain("Milan").ask
    assert ask is not None
    for pos in range(len(der)):
        bad = bytearray(der)
        bad[pos] ^= 0x01
        try:
            cert = parse_certificate(bytes(bad))
            endorsement_extensions(cert)
        except FormatError:
            continue
        with pytest.raises(VerificationError):
            verify_link(cert, ask)


def test_synthetic_variants_kds_tolerates() -> None:
    ca = snpkit.make_ca("Milan")
    two = endorsement_extensions(parse_certificate(snpkit.vcek(ca, two_byte_ints=True, spl={"ucode": 200})))
    assert two.ucode_spl == 200 and two.bl_spl == 3  # 02 02 00 c8 and 02 02 00 03
    octet = endorsement_extensions(parse_certificate(snpkit.vcek(ca, hwid_octet_string=True)))
    assert octet.hwid == b"\x11" * 64
    vlek = endorsement_extensions(parse_certificate(snpkit.vcek(ca, hwid=None, csp_id="cloud-csp")))
    assert vlek.kind == "VLEK" and vlek.csp_id == "cloud-csp" and vlek.hwid is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"omit": ("3.3",)}, "snpSPL"),
        ({"omit": ("2",)}, "productName"),
        ({"hwid": None}, "neither hwID"),
        ({"csp_id": "x"}, "both hwID and cspId"),
        ({"hwid": b"\x01" * 10}, "hwID"),
        ({"spl": {"snp": 300}}, "not 0-255"),
    ],
)
def test_bad_extensions_are_format_errors(kwargs: dict[str, object], message: str) -> None:
    cert = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan"), **kwargs))  # type: ignore[arg-type]
    with pytest.raises(FormatError, match=message):
        endorsement_extensions(cert)


def test_canonical_product() -> None:
    assert canonical_product("milan") == "Milan"
    assert canonical_product("Milan-B0") == "Milan"
    assert canonical_product("SEV-VLEK-Genoa") == "Genoa"
    assert canonical_product("ARK-Turin") == "Turin"
    assert canonical_product("Siena") == "Genoa"
    with pytest.raises(FormatError, match="unknown SEV-SNP product"):
        canonical_product("Rome")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x30",
        b"\x30\x80\x00\x00",
        b"\x30\x81\x05abc",
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n",
    ],
)
def test_malformed_certificates_are_format_errors(blob: bytes) -> None:
    with pytest.raises(FormatError):
        parse_certificates(blob)


def test_two_certs_where_one_expected() -> None:
    with pytest.raises(FormatError, match="expected one certificate, found 2"):
        parse_certificate(snpkit.data("gsg_milan_cert_chain.pem"))
    with pytest.raises(FormatError, match="one self-issued ARK"):
        parse_product_chain(builtin_chain("Milan").ask.to_pem().encode())  # type: ignore[union-attr]


@settings(max_examples=150)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(blob: bytes) -> None:
    try:
        parse_certificates(blob)
    except FormatError:
        pass


@settings(max_examples=150)
@given(st.data())
def test_fuzz_mutated_real_vcek(data: st.DataObject) -> None:
    der = bytearray(snpkit.data("virtee_turin_vcek.der"))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(der) - 1))
        der[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    try:
        cert = parse_certificate(bytes(der[:cut]) if cut else bytes(der))
        endorsement_extensions(cert)
        _ = cert.public_key
    except FormatError:
        pass
