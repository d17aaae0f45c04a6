"""SNP attestation report: two-stage parsing, every field, TCB layouts, signature over 0x000-0x29F."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.sev import snpkit

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.snp import (
    REPORT_SIZE,
    TcbVersion,
    parse_report_unverified,
    product_from_cpuid,
    read_report_bytes,
)
from sevbox.sev.vcek import endorsement_public_key, parse_certificate


def gsg() -> tuple[bytes, bytes]:
    return snpkit.data("gsg_milan_report.bin"), snpkit.data("gsg_milan_vcek.der")


def virtee() -> tuple[bytes, bytes]:
    return snpkit.virtee_report(), snpkit.data("virtee_milan_vcek.der")


def key_of(cert_der: bytes):  # type: ignore[no-untyped-def]
    return endorsement_public_key(parse_certificate(cert_der))


def test_gsg_report_fields_match_vectors_md() -> None:
    raw, cert = gsg()
    r = parse_report_unverified(raw).verify(key_of(cert))
    assert r.verified
    assert r.version == 2
    assert r.policy == 0xB0000
    assert r.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert r.reported_tcb.raw.to_bytes(8, "little").hex() == "0200000000000544"
    assert (r.reported_tcb.bootloader, r.reported_tcb.tee, r.reported_tcb.snp) == (2, 0, 5)
    assert r.reported_tcb.microcode == 0x44
    assert r.reported_tcb.fmc is None
    assert r.chip_id.hex().startswith("3ac3fe21") and r.chip_id.hex().endswith("8b006b5d")
    assert r.measurement.hex().startswith("b07af962") and r.measurement.hex().endswith("e4872b01")
    assert r.current_fw == "1.49 build 3"
    assert r.signing_key_name == "VCEK"
    assert r.cpuid_fam_id is None and r.product is None  # v2: no CPUID fields
    assert r.launch_mit_vector is None


def test_virtee_report_fields_match_vectors_md() -> None:
    raw, cert = virtee()
    r = parse_report_unverified(raw).verify(key_of(cert))
    assert (r.version, r.policy, r.vmpl) == (2, 0x30000, 0)
    assert r.reported_tcb.parts() == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 0x73}
    assert r.current_fw == "1.52 build 4"
    assert r.measurement.hex().startswith("7a1e5c26") and r.measurement.hex().endswith("cd81841f")
    assert r.chip_id == parse_certificate(cert).extension("1.3.6.1.4.1.3704.1.4").value  # type: ignore[union-attr]
    assert r.platform_info_names() == ["SMT_EN"]
    assert not r.mask_chip_key and not r.author_key_en


def test_every_field_is_listed_and_covers_the_layout() -> None:
    for version in (2, 3, 5):
        raw = snpkit.report(version=version)
        fields = dict(parse_report_unverified(raw).decode_unverified().fields())
        # reserved fields are named by offset; version-specific ones appear only where they exist
        assert ("cpuid_fam_id" in fields) == (version >= 3)
        assert ("launch_mit_vector" in fields) == (version >= 5)
        assert "reserved_0x4c" in fields and "reserved_0x330" in fields
        sizes = sum(len(v) for v in fields.values() if isinstance(v, bytes))
        # bytes fields + fixed ints: the bytes fields alone must not overlap beyond the report
        assert sizes < REPORT_SIZE


def test_v3_and_v5_fields() -> None:
    raw = snpkit.report(version=5, cpuid=(0x1A, 0x02, 0x01), mit=(0x11, 0x22))
    r = parse_report_unverified(raw).verify(snpkit.signing_key().public_key())
    assert (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step) == (0x1A, 0x02, 0x01)
    assert r.product == "Turin"
    assert r.turin_tcb  # chosen from CPUID family 1Ah
    assert (r.launch_mit_vector, r.current_mit_vector) == (0x11, 0x22)
    assert r.measurement == bytes(range(48))
    assert r.host_data == b"\xaa" * 32
    assert r.current_fw == "1.55 build 21" and r.committed_fw == "1.55 build 20"
    r3 = parse_report_unverified(snpkit.report(version=3)).verify(snpkit.signing_key().public_key())
    assert r3.product == "Milan" and r3.launch_mit_vector is None and not r3.turin_tcb


def test_product_from_cpuid() -> None:
    assert product_from_cpuid(0x19, 0x01) == "Milan"
    assert product_from_cpuid(0x19, 0x11) == "Genoa"
    assert product_from_cpuid(0x19, 0xA0) == "Genoa"  # Siena
    assert product_from_cpuid(0x1A, 0x02) == "Turin"
    assert product_from_cpuid(0x1A, 0x11) == "Turin"
    assert product_from_cpuid(0x17, 0x31) is None  # Rome: no SNP


def test_tcb_layouts_differ() -> None:
    raw = int.from_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 8]), "little")
    milan = TcbVersion(raw)
    turin = TcbVersion(raw, turin=True)
    assert milan.parts() == {"bootloader": 1, "tee": 2, "snp": 7, "microcode": 8}
    assert turin.parts() == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 8}
    assert milan.reserved == bytes([3, 4, 5, 6]) and turin.reserved == bytes([5, 6, 7])
    back = TcbVersion.from_parts(
        fmc=1, bootloader=2, tee=3, snp=4, microcode=8, turin=True, reserved=b"\5\6\7"
    )
    assert back == turin
    assert TcbVersion.from_parts(bootloader=1, tee=2, snp=7, microcode=8, reserved=b"\3\4\5\6") == milan


def test_tcb_meets() -> None:
    have = TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115)
    assert have.meets(TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115)) == []
    assert have.meets(TcbVersion.from_parts(bootloader=2, tee=0, snp=9, microcode=200)) == [
        "snp 8 < 9",
        "microcode 115 < 200",
    ]
    with pytest.raises(FormatError):
        have.meets(TcbVersion(0, turin=True))
    with pytest.raises(FormatError):
        TcbVersion.from_parts(bootloader=256, tee=0, snp=0, microcode=0)
    with pytest.raises(FormatError):
        TcbVersion.from_parts(bootloader=0, tee=0, snp=0, microcode=0, fmc=1)  # FMC is Turin's
    with pytest.raises(FormatError):
        TcbVersion(1 << 64)


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 4096])
def test_wrong_length_is_a_format_error(size: int) -> None:
    with pytest.raises(FormatError, match="0x4A0"):
        parse_report_unverified(bytes(size))


@pytest.mark.parametrize("version", [0, 1, 4, 6, 0xFFFFFFFF])
def test_unsupported_version_is_a_format_error(version: int) -> None:
    raw = bytearray(snpkit.virtee_report())
    raw[0:4] = version.to_bytes(4, "little")
    with pytest.raises(FormatError, match=f"version {version} is not supported"):
        parse_report_unverified(bytes(raw))


def test_read_report_bytes_raw_and_hex() -> None:
    raw = snpkit.virtee_report()
    assert read_report_bytes(raw) == raw
    assert read_report_bytes(snpkit.data("virtee_milan_report.hex")) == raw
    assert read_report_bytes(b"0x" + raw.hex().encode() + b"\n") == raw
    spaced = " ".join(raw.hex()[i : i + 32] for i in range(0, len(raw.hex()), 32)).encode()
    assert read_report_bytes(spaced) == raw
    with pytest.raises(FormatError, match="neither"):
        read_report_bytes(b"\xff" * 100)
    with pytest.raises(FormatError, match="neither"):
        read_report_bytes(b"zz" * 1184)
    with pytest.raises(FormatError, match="holds 2 bytes"):
        read_report_bytes(b"abcd")


def test_real_reports_verify_and_every_flipped_byte_fails() -> None:
    raw, cert = virtee()
    key = key_of(cert)
    parse_report_unverified(raw).verify(key)
    for pos in range(REPORT_SIZE):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        try:
            unverified = parse_report_unverified(bytes(bad))
        except FormatError:
            assert pos < 4  # only the version field can make stage one refuse it
            continue
        with pytest.raises(VerificationError) as info:
            unverified.verify(key)
        assert info.value.check == "report signature", pos


def test_gsg_report_does_not_verify_with_the_other_vcek() -> None:
    raw, _ = gsg()
    with pytest.raises(VerificationError, match="does not verify"):
        parse_report_unverified(raw).verify(key_of(snpkit.data("virtee_milan_vcek.der")))


def test_signature_padding_and_reserved_bytes_must_be_zero() -> None:
    raw = bytearray(snpkit.report())
    for pos, msg in ((0x2A0 + 60, "non-zero bytes above"), (0x2E8 + 71, "non-zero"), (0x400, "reserved")):
        bad = bytearray(raw)
        bad[pos] = 1
        with pytest.raises(VerificationError, match=msg):
            parse_report_unverified(bytes(bad)).verify(snpkit.signing_key().public_key())
    zero = bytearray(raw)
    zero[0x2A0:0x4A0] = bytes(0x200)
    with pytest.raises(VerificationError, match="zero"):
        parse_report_unverified(bytes(zero)).verify(snpkit.signing_key().public_key())


def test_wrong_key_type_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError, match="P-384"):
        parse_report_unverified(snpkit.report()).verify(p256)


def test_decode_unverified_says_so_and_json_has_every_field() -> None:
    r = parse_report_unverified(snpkit.report(version=5)).decode_unverified()
    assert r.verified is False
    js = r.to_json()
    for name, _ in r.fields():
        assert name in js
    assert js["policy"] == "0x30000" and js["launch_mit_vector"] == "0x3"
    assert js["reported_tcb"]["snp"] == 8


@settings(max_examples=100)
@given(st.binary(min_size=0, max_size=REPORT_SIZE + 8))
def test_fuzz_stage_one_only_format_errors(blob: bytes) -> None:
    try:
        parse_report_unverified(blob)
    except FormatError:
        pass


@settings(max_examples=100)
@given(st.sampled_from([2, 3, 5]), st.binary(min_size=REPORT_SIZE - 4, max_size=REPORT_SIZE - 4))
def test_fuzz_any_body_decodes_or_fails_typed(version: int, body: bytes) -> None:
    u = parse_report_unverified(version.to_bytes(4, "little") + body)
    r = u.decode_unverified()
    r.to_json()
    r.policy_description()
    with pytest.raises(VerificationError):
        u.verify(snpkit.signing_key().public_key())
