"""sevbox.host.probe on captured host trees (tests/data/check) and on pieces of real file formats."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hostfakes import write_fake_cpuid
from hypothesis import given
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.host import probe
from sevbox.host.probe import CHECK_IDS, decode_cpuid_8000001f, evaluate, gather, sev_params

Tree = Callable[[str], Path]


def checks(report: probe.Report) -> dict[str, probe.Check]:
    return {c.id: c for c in report.checks}


# ------------------------------------------------------------------------------ JSON contract


def test_json_shape_is_the_issues(tree: Tree) -> None:
    report = probe.probe(tree("snp"))
    doc = json.loads(json.dumps(report.to_json()))
    assert set(doc) == {"ready", "checks"}
    assert set(doc["ready"]) == {"vm", "sev", "sev-es", "sev-snp"}
    assert all(isinstance(v, bool) for v in doc["ready"].values())
    assert [c["id"] for c in doc["checks"]] == list(CHECK_IDS)
    for c in doc["checks"]:
        assert set(c) == {"id", "ok", "detail", "fix"}
        assert isinstance(c["ok"], bool) and isinstance(c["detail"], str) and isinstance(c["fix"], str)
        assert c["detail"]
        if not c["ok"]:
            assert c["fix"], c  # every failed item on an AMD host says how to fix it


# ------------------------------------------------------------------------------- the trees


def test_snp_host_is_ready_for_everything(tree: Tree) -> None:
    report = probe.probe(tree("snp"))
    assert report.ready == {"vm": True, "sev": True, "sev-es": True, "sev-snp": True}
    assert report.cpu_offers == "sev-snp"
    assert report.exit_code == 0
    c = checks(report)
    assert "C-bit 51" in c["cpu.sev"].detail and "1006 encrypted guests" in c["cpu.sev"].detail
    assert "min SEV (non-ES) ASID 100" in c["cpu.sev-snp"].detail
    assert c["dev.sev"].detail.startswith("/dev/sev: SEV API 1.55 build 38, state INIT")
    assert "SEV-ES configured" in c["dev.sev"].detail
    assert "cbitpos 51, reduced-phys-bits 6" in c["qemu.sev-snp-guest"].detail
    assert "with kernel-hashes" in c["qemu.sev-guest"].detail
    assert c["firmware.ovmf"].detail.startswith(
        "usable for sev, sev-es, sev-snp: /usr/share/OVMF/OVMF_CODE.fd"
    )
    assert (
        "/usr/share/ovmf/OVMF.amdsev.fd: SEV-ES reset block, SEV hashes table, secret area, SNP metadata"
        in (c["firmware.ovmf"].detail)
    )
    assert c["libvirt.sev"].ok and "maxESGuests 99" in c["libvirt.sev"].detail
    assert "sev-snp" in c["libvirt.sev"].detail
    # no mem_encrypt on this host's command line: reported, with its fix, but needed by no mode
    assert not c["kernel.mem_encrypt"].ok and "mem_encrypt=on" in c["kernel.mem_encrypt"].fix
    assert (report.cbitpos, report.reduced_phys_bits) == (51, 6)


def test_snp_missing_kvm_param(tree: Tree) -> None:
    report = probe.probe(tree("snp-missing-kvm-param"))
    assert report.ready == {"vm": True, "sev": True, "sev-es": True, "sev-snp": False}
    kvm = checks(report)["kvm.sev-snp"]
    assert not kvm.ok
    assert "/sys/module/kvm_amd/parameters/sev_snp is 'N'" in kvm.detail
    assert "although the CPU shows it" in kvm.detail
    assert "kvm_amd.sev_snp=1" in kvm.fix
    assert report.why["sev-snp"].startswith("kvm.sev-snp: SEV-SNP disabled in KVM")
    # SNP is what the CPU offers, and it is not ready: not a zero exit
    assert report.cpu_offers == "sev-snp" and report.exit_code == 1


def test_sev_es_host_from_cpuinfo_flags_only(tree: Tree) -> None:
    root = tree("sev-es")
    assert not (root / "dev/cpu").exists()
    report = probe.probe(root)
    assert report.ready == {"vm": True, "sev": True, "sev-es": True, "sev-snp": False}
    c = checks(report)
    assert "using /proc/cpuinfo flags" in c["cpu.sev"].detail
    assert not c["cpu.sev-snp"].ok and "no 'sev_snp' flag" in c["cpu.sev-snp"].detail
    assert not c["kvm.sev-snp"].ok and "has no 'sev_snp' parameter" in c["kvm.sev-snp"].detail
    assert c["kernel.mem_encrypt"].ok and "SME" in c["kernel.mem_encrypt"].detail
    assert report.cpu_offers == "sev-es" and report.exit_code == 0
    assert (report.cbitpos, report.reduced_phys_bits) == (47, 1)  # from query-sev-capabilities


def test_sev_only_host_with_int_parameter(tree: Tree) -> None:
    report = probe.probe(tree("sev"))
    assert report.ready == {"vm": True, "sev": True, "sev-es": False, "sev-snp": False}
    c = checks(report)
    assert c["kvm.sev"].ok and "'1'" in c["kvm.sev"].detail
    assert "has no 'sev_es' parameter" in c["kvm.sev-es"].detail
    assert c["kernel.mem_encrypt"].ok  # mem_encrypt=on on the command line (and SME active)
    assert report.cpu_offers == "sev" and report.exit_code == 0


def test_no_sev_host_real_capture(tree: Tree) -> None:
    report = probe.probe(tree("no-sev"))
    assert report.ready == {"vm": True, "sev": False, "sev-es": False, "sev-snp": False}
    c = checks(report)
    for i in ("cpu.sev", "cpu.sev-es", "cpu.sev-snp"):
        assert "is not an AMD CPU" in c[i].detail and "GenuineIntel" in c[i].detail
    assert "SEV is not enabled in KVM" in c["qemu.sev-guest"].detail
    assert "SEV-ES reset block (no hashes table, no SNP metadata)" in c["firmware.ovmf"].detail
    assert not c["libvirt.sev"].ok and "no captured domcapabilities" in c["libvirt.sev"].detail
    assert report.cpu_offers == "vm" and report.exit_code == 1
    assert report.cbitpos is None


def test_intel_cpuid_leaf_above_max_is_ignored(tree: Tree) -> None:
    """The recorded leaf 0x8000001F of this Intel host reads 0x70001 in EBX (Intel returns the
    highest basic leaf's data): it must not be taken for a C-bit position."""
    root = tree("no-sev")
    facts = gather(root)
    assert facts.cpu.cpuid == probe.SevCpuid(0, 0, 0, 0)
    assert "highest extended leaf 0x80000008" in facts.cpu.cpuid_note
    assert facts.cpu.vendor == "GenuineIntel"
    assert sev_params(root) is None


def test_cpu_has_snp_but_bios_left_it_off(tree: Tree) -> None:
    root = tree("snp")
    info = root / "proc/cpuinfo"
    info.write_text(info.read_text().replace(" sev_snp", ""))
    report = probe.probe(root)
    c = checks(report)["cpu.sev-snp"]
    assert not c.ok
    assert "the CPU has SEV-SNP but the kernel does not show it" in c.detail
    assert "BIOS" in c.fix
    assert report.cpu_offers == "sev-snp"  # the CPU offers it (CPUID): so exit 1, not 0
    assert report.ready["sev-es"] and not report.ready["sev-snp"] and report.exit_code == 1


def test_no_asids_left_for_es(tree: Tree) -> None:
    root = tree("snp")
    write_fake_cpuid(root, {0x8000_001F: (0x3B, 51 | 6 << 6, 509, 1)})  # min SEV ASID 1: none for ES
    c = checks(probe.probe(root))
    assert c["cpu.sev"].ok
    assert not c["cpu.sev-es"].ok and "no ASIDs for SEV-ES/SNP" in c["cpu.sev-es"].detail
    assert "Minimum SEV non-ES ASID" in c["cpu.sev-es"].fix


def test_kvm_amd_not_loaded_but_on_cmdline(tree: Tree) -> None:
    root = tree("sev")
    shutil.rmtree(root / "sys/module/kvm_amd")
    c = checks(probe.probe(root))["kvm.sev"]
    assert not c.ok
    assert c.detail == "the kvm_amd module is not loaded; the kernel command line sets kvm_amd.sev=1"
    assert c.fix.startswith("load it: modprobe kvm_amd sev=1")


def test_explicit_off_on_cmdline_is_named_in_fix(tree: Tree) -> None:
    root = tree("sev-es")
    (root / "proc/cmdline").write_text("ro mem_encrypt=off kvm_amd.sev-es=0\n")
    (root / "sys/module/kvm_amd/parameters/sev_es").write_text("N\n")
    c = checks(probe.probe(root))
    assert c["kvm.sev-es"].fix.startswith("remove kvm_amd.sev_es=0 from the kernel command line")
    # the SME message in the log still shows host SME active despite mem_encrypt=off on this copy
    assert c["kernel.mem_encrypt"].ok


def test_mem_encrypt_off_without_sme_message(tree: Tree) -> None:
    root = tree("sev-es")
    (root / "proc/cmdline").write_text("ro mem_encrypt=off\n")
    (root / "dev/kmsg").write_text("6,1,1,-;ccp 0000:22:00.1: sev enabled\n")
    c = checks(probe.probe(root))["kernel.mem_encrypt"]
    assert not c.ok and c.detail == "the kernel command line has mem_encrypt=off"


def test_missing_dev_sev_blocks_every_encrypted_mode(tree: Tree) -> None:
    root = tree("snp")
    (root / "dev/sev").unlink()
    report = probe.probe(root)
    assert report.ready == {"vm": True, "sev": False, "sev-es": False, "sev-snp": False}
    assert report.why["sev"].startswith("dev.sev: /dev/sev does not exist")
    assert "modprobe ccp" in checks(report)["dev.sev"].fix


def test_firmware_without_hashes_table_blocks_sev(tree: Tree) -> None:
    root = tree("snp")
    (root / "usr/share/ovmf/OVMF.amdsev.fd").unlink()  # leaves the OvmfX64 build: no hashes table
    report = probe.probe(root)
    fw = checks(report)["firmware.ovmf"]
    assert not fw.ok and "AmdSevX64.dsc" in fw.fix
    assert not any(report.ready[m] for m in ("sev", "sev-es", "sev-snp")) and report.ready["vm"]


def test_firmware_good_for_sev_but_not_snp_is_explained(tree: Tree) -> None:
    facts = gather(tree("snp"))
    fw = tuple(replace(f, snp_metadata=False) for f in facts.firmware)
    report = evaluate(replace(facts, firmware=fw))
    assert checks(report)["firmware.ovmf"].ok
    assert report.ready["sev-es"] and not report.ready["sev-snp"]
    assert report.why["sev-snp"].startswith("firmware.ovmf: no OVMF build found that can launch sev-snp")


def test_malformed_firmware_is_reported_not_raised(tree: Tree) -> None:
    root = tree("snp")
    data = bytearray((root / "usr/share/ovmf/OVMF.amdsev.fd").read_bytes())
    data[-50:-48] = b"\x05\x00"  # footer table size smaller than its own header
    (root / "usr/share/ovmf/OVMF.amdsev.fd").write_bytes(bytes(data))
    c = checks(probe.probe(root))["firmware.ovmf"]
    assert "/usr/share/ovmf/OVMF.amdsev.fd: malformed:" in c.detail


def test_old_qemu_blocks_snp_and_es(tree: Tree) -> None:
    facts = gather(tree("snp"))
    old = replace(facts.qemu, version=(5, 2, 0), objects=facts.qemu.objects - {"sev-snp-guest"})
    report = evaluate(replace(facts, qemu=old))
    c = checks(report)
    assert c["qemu.version"].ok and "SEV-ES needs QEMU >= 6.0" in c["qemu.version"].detail
    assert not c["qemu.sev-snp-guest"].ok and "does not know the object type sev-snp-guest" in (
        c["qemu.sev-snp-guest"].detail
    )
    assert report.ready["sev"] and not report.ready["sev-es"] and not report.ready["sev-snp"]
    assert report.why["sev-es"] == "qemu.version: sev-es needs QEMU >= 6.0"


def test_uncaptured_qemu_is_not_ok(tree: Tree) -> None:
    root = tree("snp")
    shutil.rmtree(root / "sevbox-capture")
    report = probe.probe(root)
    c = checks(report)
    assert not c["qemu.version"].ok and "no captured QEMU output" in c["qemu.version"].detail
    assert not report.ready["vm"]


def test_swiotlb_larger_than_half_the_guest(tree: Tree) -> None:
    report = probe.probe(tree("snp"), swiotlb_mib=200, memory_mib=256)
    c = checks(report)["guest.swiotlb"]
    assert not c.ok and "swiotlb=102400" in c.detail and "swiotlb_mib" in c.fix
    assert not report.ready["sev-snp"] and report.ready["vm"]
    assert checks(probe.probe(tree("snp"), swiotlb_mib=0))["guest.swiotlb"].ok


def test_sev_params_from_cpuid(tree: Tree) -> None:
    assert sev_params(tree("snp")) == (51, 6)
    assert sev_params(tree("sev-es")) == (47, 1)  # no cpuid driver: the captured QMP reply


# --------------------------------------------------------------------------- pure decoders


def test_decode_cpuid_naples_style_values() -> None:
    # EBX 0x16f: C-bit 47, 5 bits of physical address space lost; 15 guests, min ASID 0 (no ES)
    c = decode_cpuid_8000001f(0x7, 0x16F, 0xF, 0x0)
    assert (c.sme, c.sev, c.sev_es, c.snp) == (True, True, False, False)
    assert (c.cbitpos, c.reduced_phys_bits, c.num_vmpls) == (47, 5, 0)
    assert (c.max_guests, c.min_sev_asid, c.sev_asids, c.es_asids) == (15, 0, 15, 0)
    assert c.features == ("SME", "SEV", "VmPageFlush")


def test_decode_cpuid_asid_split() -> None:
    c = decode_cpuid_8000001f(0x3B, 51 | 6 << 6 | 4 << 12, 1006, 100)
    assert (c.sev_asids, c.es_asids, c.num_vmpls) == (907, 99, 4)
    with pytest.raises(ValueError):
        decode_cpuid_8000001f(1 << 32, 0, 0, 0)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_cpuid_fields_roundtrip(eax: int, ebx: int) -> None:
    c = decode_cpuid_8000001f(eax, ebx, 0, 0)
    assert c.cbitpos | c.reduced_phys_bits << 6 | c.num_vmpls << 12 == ebx & 0xFFFF
    assert c.sev == bool(eax & 2) and c.snp == bool(eax & 16)


def test_parse_cpuinfo_takes_first_processor() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: sme sev\n\nprocessor\t: 1\nflags\t\t: x\n"
    assert probe.parse_cpuinfo(text) == ("AuthenticAMD", None, frozenset({"sme", "sev"}))


def test_parse_cmdline_dash_underscore_and_init_args() -> None:
    got = probe.parse_cmdline("ro kvm_amd.sev-es=1 kvm-amd.sev_snp=0 mem_encrypt=on -- kvm_amd.sev=0")
    assert got == {"ro": "", "kvm_amd.sev_es": "1", "kvm_amd.sev_snp": "0", "mem_encrypt": "on"}


def test_parse_domcapabilities_real_layout() -> None:
    xml = (Path(__file__).parents[2] / "data/check/snp/sevbox-capture/virsh-domcapabilities.xml").read_text()
    sev, details, types = probe.parse_domcapabilities(xml)
    assert sev is True and details["cbitpos"] == "51" and types == ("sev", "sev-snp")
    assert probe.parse_domcapabilities("<domainCapabilities/>") == (None, {}, ())
    with pytest.raises(FormatError):
        probe.parse_domcapabilities("<domainCapabilities>")


def test_bad_captured_json_is_reported(tree: Tree) -> None:
    root = tree("snp")
    (root / "sevbox-capture/query-sev-capabilities.json").write_text("{not json")
    c = checks(probe.probe(root))["qemu.sev-snp-guest"]
    assert not c.ok and "is not JSON" in c.detail


def test_device_failures_are_plain_items(tree: Tree) -> None:
    facts = gather(tree("snp"))
    denied = replace(facts, dev_sev=probe.DeviceFacts(True, False, "cannot open /dev/sev: Permission denied"))
    c = checks(evaluate(denied))["dev.sev"]
    assert not c.ok and "Permission denied" in c.detail and "run as root" in c.fix
    broken = replace(
        facts, dev_sev=probe.DeviceFacts(True, True, status_error="SEV PLATFORM_STATUS failed: x")
    )
    assert "PLATFORM_STATUS failed" in checks(evaluate(broken))["dev.sev"].detail
    odd_kvm = replace(facts, dev_kvm=probe.DeviceFacts(True, True, kvm_api=11))
    report = evaluate(odd_kvm)
    assert (
        not checks(report)["kvm.usable"].ok
        and "API version 11, not 12" in checks(report)["kvm.usable"].detail
    )
    assert report.ready["vm"] and not report.ready["sev-snp"]  # plain VMs fall back to TCG
    no_kvm = replace(facts, dev_kvm=probe.DeviceFacts(False, None))
    assert checks(evaluate(no_kvm))["kvm.usable"].detail == "/dev/kvm does not exist"


def test_libvirt_says_no(tree: Tree) -> None:
    root = tree("snp")
    xml = root / "sevbox-capture/virsh-domcapabilities.xml"
    xml.write_text(xml.read_text().replace("<sev supported='yes'>", "<sev supported='no'>"))
    report = probe.probe(root)
    assert checks(report)["libvirt.sev"].detail == "libvirt domcapabilities: <sev supported='no'>"
    assert report.ready["sev-snp"]  # libvirt is needed by no mode


def test_cpuid_feature_names() -> None:
    c = decode_cpuid_8000001f(1 << 24 | 1 << 25 | 1 << 28 | 1 << 15, 0, 0, 0)
    assert c.features == ("PreventHostIbs", "VmsaRegProt", "SmtProtection", "SvsmCommPageMsr")


def test_kvm_that_does_not_boot_linux(tree: Tree) -> None:
    facts = gather(tree("snp"))
    note = "/dev/kvm opens but a Linux guest printed nothing under KVM in 6s"
    hung = replace(
        facts, dev_kvm=probe.DeviceFacts(True, True, kvm_api=12, boots_linux=False, boots_note=note)
    )
    report = evaluate(hung)
    c = checks(report)["kvm.usable"]
    assert not c.ok and note in c.detail and "SEV needs KVM" in c.detail
    assert report.ready == {"vm": True, "sev": False, "sev-es": False, "sev-snp": False}
    assert report.why["sev-snp"].startswith("kvm.usable: ")


def test_cached_accel_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text("b1\n")
    monkeypatch.setenv("SEVBOX_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    assert probe._cached_accel(root) == (None, "")  # never probed
    cache = tmp_path / "data/accel.json"
    cache.write_text(json.dumps({"boot_id": "b1", "name": "tcg", "reason": "no console line"}))
    assert probe._cached_accel(root) == (False, "no console line")
    cache.write_text(json.dumps({"boot_id": "b0", "name": "kvm", "reason": "old boot"}))
    assert probe._cached_accel(root) == (None, "")  # another boot's answer is not this boot's
    cache.write_text("[1, 2]")
    assert probe._cached_accel(root) == (None, "")
