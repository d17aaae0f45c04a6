"""verify_report: the recipe's named checks on real Milan reports and on synthetic v3/v5/Turin/VLEK ones."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.sev import snpkit

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.snp import TcbVersion
from sevbox.sev.vcek import ProductChain, parse_certificate
from sevbox.sev.verify import Expectations, Status, VerifyResult, policy_within, verify_report

CHAIN_CHECKS = ["ARK is AMD's", "ARK self-signed", "ARK -> ASK", "ASK -> VCEK"]


def status(result: VerifyResult) -> dict[str, str]:
    return {c.name: c.status.value for c in result.checks}


def fake_chain(product: str = "Milan") -> ProductChain:
    ca = snpkit.make_ca(product)
    return ProductChain(
        product, parse_certificate(ca.ark), parse_certificate(ca.ask), parse_certificate(ca.asvk)
    )


def test_virtee_report_verifies_with_the_builtin_chain() -> None:
    vcek = parse_certificate(snpkit.data("virtee_milan_vcek.der"))
    r = verify_report(
        snpkit.virtee_report(),
        vcek,
        expect=Expectations(
            measurement=bytes.fromhex(
                "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
                "3e1a0dc39b2c60bd95b9c480cd81841f"
            ),
            max_policy=0x30000,
            min_tcb={"bootloader": 3, "snp": 8, "microcode": 115},
            vmpl=0,
        ),
        now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert r.ok, r.failed
    assert r.product == "Milan" and r.kind == "VCEK" and r.report is not None and r.report.verified
    names = [c.name for c in r.checks]
    assert names[:4] == CHAIN_CHECKS
    assert names.index("report signature") < names.index("TCB")
    for n in ("certificate dates", "signing key", "product", "TCB", "hwID", "debug", "migration agent"):
        assert n in names
    for n in ("measurement", "policy", "minimum TCB", "VMPL"):
        assert n in names
    r.raise_for_failure()


def test_gsg_report_verifies_when_debug_is_allowed_and_fails_debug_otherwise() -> None:
    vcek = parse_certificate(snpkit.data("gsg_milan_vcek.der"))
    report = snpkit.data("gsg_milan_report.bin")
    assert verify_report(
        report, vcek, expect=Expectations(allow_debug=True, report_data=bytes([1, 2, 3, 4, 5]))
    ).ok
    r = verify_report(report, vcek)
    assert [c.name for c in r.failed] == ["debug"]
    with pytest.raises(VerificationError) as info:
        r.raise_for_failure()
    assert info.value.check == "debug"


def test_every_flipped_report_byte_fails_and_later_checks_are_skipped() -> None:
    vcek = parse_certificate(snpkit.data("virtee_milan_vcek.der"))
    raw = snpkit.virtee_report()
    for pos in range(4, len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 0x80
        r = verify_report(bytes(bad), vcek)
        assert not r.ok
        assert r.failed[0].name == "report signature", pos
        assert r.report is None
        assert all(c.status is Status.SKIPPED for c in r.checks[r.checks.index(r.failed[0]) + 1 :])


def test_every_flipped_vcek_byte_fails_the_chain_or_the_parse() -> None:
    der = snpkit.data("virtee_milan_vcek.der")
    raw = snpkit.virtee_report()
    for pos in range(0, len(der), 3):
        bad = bytearray(der)
        bad[pos] ^= 0x01
        try:
            r = verify_report(raw, parse_certificate(bytes(bad)))
        except FormatError:
            continue
        assert not r.ok
        assert status(r)["ASK -> VCEK"] == "FAILED", pos


def test_the_wrong_vcek_fails_signature_tcb_or_chain() -> None:
    gsg = parse_certificate(snpkit.data("gsg_milan_vcek.der"))
    r = verify_report(snpkit.virtee_report(), gsg)
    assert status(r)["report signature"] == "FAILED"
    turin = parse_certificate(snpkit.data("virtee_turin_vcek.der"))
    r = verify_report(snpkit.virtee_report(), turin)
    assert r.product == "Turin"  # from the certificate; the chain holds, the report does not
    assert status(r)["ASK -> VCEK"] == "ok" and status(r)["report signature"] == "FAILED"


def test_milan_vcek_with_turin_chain_fails_the_link() -> None:
    vcek = parse_certificate(snpkit.data("virtee_milan_vcek.der"))
    r = verify_report(snpkit.virtee_report(), vcek, product="turin")
    assert status(r)["ASK -> VCEK"] == "FAILED"
    assert status(r)["report signature"] == "ok"  # the key matches; the chain does not


def test_synthetic_v3_milan_all_checks() -> None:
    chain = fake_chain()
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(
        snpkit.report(version=3),
        vcek,
        chain=chain,
        allow_foreign_ark=True,
        expect=Expectations(host_data=b"\xaa" * 32, report_data=b"\x01\x02\x03", vmpl=0),
    )
    assert r.ok, r.failed
    assert "CPUID family 0x19 model 0x1" in dict((c.name, c.detail) for c in r.checks)["product"]


def test_builtin_chain_rejects_a_fake_ask() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(snpkit.report(version=3), vcek)  # built-in AMD Milan chain
    assert status(r)["ASK -> VCEK"] == "FAILED"
    assert status(r)["ARK self-signed"] == "ok" and status(r)["report signature"] == "ok"


def test_synthetic_turin_v5_with_8_byte_hwid() -> None:
    ca = snpkit.make_ca("Turin")
    chip = bytes.fromhex("1e550a8ee5cf9f4d") + bytes(56)
    spl = {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 9}
    vcek = parse_certificate(snpkit.vcek(ca, product_name="Turin", turin=True, spl=spl, hwid=chip[:8]))
    tcb = snpkit.tcb_bytes(fmc=1, bl=2, tee=3, snp=4, ucode=9, turin=True)
    raw = snpkit.report(version=5, cpuid=(0x1A, 0x02, 0x01), tcb=tcb, chip_id=chip)
    r = verify_report(
        raw,
        vcek,
        chain=fake_chain("Turin"),
        allow_foreign_ark=True,
        expect=Expectations(min_tcb={"fmc": 1, "snp": 4}),
    )
    assert r.ok, r.failed
    assert r.report is not None and r.report.reported_tcb.fmc == 1
    # the same SPLs read in Milan's layout would not match: the layout matters
    milan_reading = TcbVersion(r.report.reported_tcb.raw)
    assert milan_reading.snp != 4
    low = verify_report(
        raw, vcek, chain=fake_chain("Turin"), allow_foreign_ark=True, expect=Expectations(min_tcb={"fmc": 2})
    )
    assert [c.name for c in low.failed] == ["minimum TCB"]


def test_tcb_mismatch_and_hwid_mismatch() -> None:
    ca = snpkit.make_ca("Milan")
    vcek = parse_certificate(snpkit.vcek(ca, spl={"snp": 9}, hwid=b"\x22" * 64))
    r = verify_report(snpkit.report(), vcek, chain=fake_chain(), allow_foreign_ark=True)
    assert [c.name for c in r.failed] == ["TCB", "hwID"]


def test_masked_chip_id_fails_hwid() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(snpkit.report(mask_chip=True), vcek, chain=fake_chain(), allow_foreign_ark=True)
    assert [c.name for c in r.failed] == ["hwID"]
    assert "masked" in r.failed[0].detail


def test_product_check_catches_cpuid_disagreeing_with_the_certificate() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(
        snpkit.report(cpuid=(0x19, 0x11, 0x0)), vcek, chain=fake_chain(), allow_foreign_ark=True
    )  # Genoa CPUID
    assert [c.name for c in r.failed] == ["product"]


def test_vlek_report_and_signing_key_field() -> None:
    ca = snpkit.make_ca("Milan")
    vlek = parse_certificate(snpkit.vcek(ca, hwid=None, csp_id="csp"))
    r = verify_report(snpkit.report(signing=1), vlek, chain=fake_chain(), allow_foreign_ark=True)
    assert r.ok, r.failed
    assert r.kind == "VLEK"
    assert [c.name for c in r.checks][:4] == [
        "ARK is AMD's",
        "ARK self-signed",
        "ARK -> ASVK",
        "ASVK -> VLEK",
    ]
    wrong = verify_report(snpkit.report(signing=0), vlek, chain=fake_chain(), allow_foreign_ark=True)
    assert [c.name for c in wrong.failed] == ["signing key"]
    no_asvk = ProductChain("Milan", fake_chain().ark, fake_chain().ask, None)
    assert (
        status(verify_report(snpkit.report(signing=1), vlek, chain=no_asvk, allow_foreign_ark=True))[
            "ARK -> ASVK"
        ]
        == "FAILED"
    )


def test_signature_algo_field_is_checked_after_the_signature() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(snpkit.report(sig_algo=2), vcek, chain=fake_chain(), allow_foreign_ark=True)
    assert [c.name for c in r.failed] == ["signing key"]


def test_owner_expectations_fail_by_name() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    raw = snpkit.report(policy=0x30000 | 1 << 18, report_id_ma=b"\x01" * 32, vmpl=2)
    r = verify_report(
        raw,
        vcek,
        chain=fake_chain(),
        allow_foreign_ark=True,
        expect=Expectations(
            measurement=bytes(48),
            report_data=b"\x09",
            host_data=bytes(32),
            max_policy=0x30000,
            vmpl=0,
        ),
    )
    assert [c.name for c in r.failed] == [
        "migration agent",
        "measurement",
        "report data",
        "host data",
        "policy",
        "VMPL",
    ]
    ok = verify_report(
        raw, vcek, chain=fake_chain(), allow_foreign_ark=True, expect=Expectations(allow_migration_agent=True)
    )
    assert ok.ok


def test_certificate_dates() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(
        snpkit.report(),
        vcek,
        chain=fake_chain(),
        allow_foreign_ark=True,
        now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    assert [c.name for c in r.failed] == ["certificate dates"]


def test_policy_within() -> None:
    assert policy_within(0x30000, 0x30000) == []
    assert policy_within(0x30000, 0x30000 | 1 << 19) == []
    assert policy_within(0x30000 | 1 << 19, 0x30000) == ["DEBUG allowed"]
    assert policy_within(0x30000, 0x30000 | 1 << 20) == ["SINGLE_SOCKET not required"]
    assert policy_within(0x30000 | 1 << 20, 0x30000 | 1 << 20) == []
    assert policy_within(0x30100, 0x30105) == ["minimum ABI 1.0 < 1.5"]
    assert policy_within(0x30200, 0x30105) == []


def test_unknown_product_needs_to_be_given() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan"), product_name="Bergamo"))
    with pytest.raises(FormatError, match="--product"):
        verify_report(snpkit.report(version=2), vcek)
    # with v3 CPUID the product is found (and then confirmed)
    r = verify_report(snpkit.report(version=3), vcek, chain=fake_chain(), allow_foreign_ark=True)
    assert r.product == "Milan"


def test_a_foreign_root_fails_unless_allowed() -> None:
    vcek = parse_certificate(snpkit.vcek(snpkit.make_ca("Milan")))
    r = verify_report(snpkit.report(), vcek, chain=fake_chain())
    assert [c.name for c in r.failed] == ["ARK is AMD's"]
    assert "not the built-in AMD Milan ARK" in r.failed[0].detail
    # a real AMD chain given explicitly (a KDS cert_chain answer) is AMD's
    from sevbox.sev.vcek import parse_product_chain

    kds_chain = parse_product_chain(snpkit.data("virtee_cert_chain_milan.pem"))
    real = verify_report(
        snpkit.virtee_report(), parse_certificate(snpkit.data("virtee_milan_vcek.der")), chain=kds_chain
    )
    assert real.ok, real.failed


@settings(max_examples=60)
@given(st.data())
def test_fuzz_mutated_reports_never_verify_and_never_crash(data: st.DataObject) -> None:
    vcek = parse_certificate(snpkit.data("virtee_milan_vcek.der"))
    original = snpkit.virtee_report()
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255).filter(lambda b, p=pos: b != original[p]))
    try:
        r = verify_report(bytes(raw), vcek)
    except FormatError:
        return
    assert not r.ok
