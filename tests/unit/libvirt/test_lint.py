"""libvirt SEV lint: one failing example per rule, the guide's own examples, bad input."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.libvirt.domain import DomainSpec, domain_xml
from sevbox.libvirt.lint import (
    RULES,
    Finding,
    lint_domain,
    parse_domain,
    schema_check,
    schema_finding,
    schema_knows_snp,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "libvirt"
DH = base64.b64encode(bytes(0x824)).decode()
SESSION = base64.b64encode(bytes(0x80)).decode()


def clean(**kw: object) -> ET.Element:
    base: dict[str, object] = {
        "name": "g",
        "memory_mib": 1024,
        "vcpus": 1,
        "disk": "/srv/g.qcow2",
        "network": "default",
    }
    base.update(kw)
    return ET.fromstring(domain_xml(DomainSpec(**base)))  # type: ignore[arg-type]


def text(dom: ET.Element) -> str:
    return ET.tostring(dom, encoding="unicode")


def rules(findings: list[Finding]) -> list[str]:
    return sorted(f.rule for f in findings)


def find(dom: ET.Element, path: str) -> ET.Element:
    el = dom.find(path)
    assert el is not None, path
    return el


def drop(dom: ET.Element, parent: str, child: str) -> None:
    p = find(dom, parent)
    p.remove(find(p, child))


def _no_ls(d: ET.Element) -> None:
    d.remove(find(d, "launchSecurity"))


def _no_loader(d: ET.Element) -> None:
    drop(d, "os", "loader")
    drop(d, "os", "nvram")


def _seabios(d: ET.Element) -> None:
    find(d, "os/loader").text = "/usr/share/seabios/bios-256k.bin"


def _i440fx(d: ET.Element) -> None:
    find(d, "os/type").set("machine", "pc-i440fx-7.2")
    find(d, "devices/interface/model").set("type", "virtio-non-transitional")
    find(d, "devices/rng").set("model", "virtio-non-transitional")
    find(d, "devices/controller").set("model", "virtio-non-transitional")


def _i440fx_transitional(d: ET.Element) -> None:
    find(d, "os/type").set("machine", "pc")


def _rng_no_iommu(d: ET.Element) -> None:
    drop(d, "devices/rng", "driver")


def _rom_on(d: ET.Element) -> None:
    drop(d, "devices/interface", "rom")


def _unpinned(d: ET.Element) -> None:
    d.remove(find(d, "memtune"))


def _low_limit(d: ET.Element) -> None:
    find(d, "memtune/hard_limit").text = str(1024 * 1024 + 1000)


def _nvram_attested(d: ET.Element) -> None:
    ET.SubElement(find(d, "os"), "nvram").text = "/var/lib/libvirt/qemu/nvram/g_VARS.fd"


def _virtio_blk(d: ET.Element) -> None:
    find(d, "devices/disk/target").set("bus", "virtio")
    find(d, "devices/disk/target").set("dev", "vda")
    find(d, "devices/disk/driver").set("iommu", "on")
    disk = find(d, "devices/disk")
    disk.remove(find(disk, "address"))


def _debug_policy(d: ET.Element) -> None:
    find(d, "launchSecurity/policy").text = "0x0002"


def _bad_policy(d: ET.Element) -> None:
    find(d, "launchSecurity/policy").text = "lots"


def _incomplete(d: ET.Element) -> None:
    drop(d, "launchSecurity", "session")


def _bad_blob(d: ET.Element) -> None:
    find(d, "launchSecurity/session").text = base64.b64encode(bytes(12)).decode()


def _ls_typo(d: ET.Element) -> None:
    ET.SubElement(find(d, "launchSecurity"), "cbitPos").text = "51"


def _unhashed_kernel(d: ET.Element) -> None:
    find(d, "launchSecurity").attrib.pop("kernelHashes")


def _smm_on(d: ET.Element) -> None:
    find(d, "features/smm").set("state", "on")


# rule -> (options for the clean domain, mutation, expected element path)
CASES: dict[str, tuple[dict[str, object], Callable[[ET.Element], None], str]] = {
    "not-sev": ({}, _no_ls, "/domain"),
    "firmware-seabios": ({}, _seabios, "/domain/os/loader"),
    "machine-i440fx": ({}, _i440fx, "/domain/os/type"),
    "virtio-transitional": ({}, _i440fx_transitional, "/domain/devices/controller"),
    "virtio-iommu": ({}, _rng_no_iommu, "/domain/devices/rng"),
    "virtio-net-rom": ({}, _rom_on, "/domain/devices/interface"),
    "memory-not-pinned": ({}, _unpinned, "/domain"),
    "hard-limit-low": ({}, _low_limit, "/domain/memtune/hard_limit"),
    "nvram-attested": ({"dh_cert": DH, "session": SESSION}, _nvram_attested, "/domain/os/nvram"),
    "virtio-blk-boot": ({}, _virtio_blk, "/domain/devices/disk/target"),
    "policy-debug": ({}, _debug_policy, "/domain/launchSecurity/policy"),
    "policy-invalid": ({}, _bad_policy, "/domain/launchSecurity/policy"),
    "attest-incomplete": ({"dh_cert": DH, "session": SESSION}, _incomplete, "/domain/launchSecurity"),
    "attest-blob": ({"dh_cert": DH, "session": SESSION}, _bad_blob, "/domain/launchSecurity/session"),
    "smm-encrypted-state": ({"launch_security": "sev-es"}, _smm_on, "/domain/features/smm"),
    "launch-security": ({"launch_security": "sev-snp"}, _ls_typo, "/domain/launchSecurity/cbitPos"),
    "kernel-hashes": ({"kernel": "/boot/vmlinuz"}, _unhashed_kernel, "/domain/os/kernel"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_has_a_failing_example(rule: str) -> None:
    options, mutate, path = CASES[rule]
    dom = clean(**options)
    assert lint_domain(text(dom)) == []
    mutate(dom)
    findings = [f for f in lint_domain(text(dom)) if f.rule == rule]
    assert findings, rule
    assert findings[0].severity == RULES[rule][0]
    assert any(f.path == path for f in findings), [f.path for f in findings]
    assert all(f.fix and f.message for f in findings)


def test_every_rule_is_exercised() -> None:
    assert set(CASES) | {"schema"} == set(RULES)


def test_firmware_missing_and_efi_autoselect() -> None:
    dom = clean()
    _no_loader(dom)
    assert rules(lint_domain(text(dom))) == ["firmware-seabios"]
    find(dom, "os").set("firmware", "efi")
    assert lint_domain(text(dom)) == []


def test_transitional_flags_each_virtio_device() -> None:
    dom = clean()
    _i440fx_transitional(dom)
    found = lint_domain(text(dom))
    assert rules(found).count("virtio-transitional") == 3  # scsi controller, NIC, rng
    assert "machine-i440fx" in rules(found)


def test_snp_rules() -> None:
    dom = clean(launch_security="sev-snp")
    ET.SubElement(find(dom, "os"), "nvram").text = "/x/VARS.fd"
    find(dom, "launchSecurity/policy").text = hex(0x30000 | 1 << 19)
    assert rules(lint_domain(text(dom))) == ["nvram-attested", "policy-debug"]
    find(dom, "launchSecurity/policy").text = "0x10000"  # reserved bit 17 clear
    assert "policy-invalid" in rules(lint_domain(text(dom)))


@pytest.mark.parametrize(
    ("mode", "mutate", "message"),
    [
        ("sev", lambda ls: ls.set("vcek", "yes"), "unknown attribute 'vcek'"),
        ("sev-snp", lambda ls: ls.set("authorKey", "maybe"), "'yes' or 'no'"),
        ("sev", lambda ls: ET.SubElement(ls, "idBlock"), "not defined for type 'sev'"),
        ("sev", lambda ls: ET.SubElement(ls, "policy").__setattr__("text", "0x3"), "twice"),
        ("sev", lambda ls: find(ls, "cbitpos").__setattr__("text", "0x33"), "decimal"),
        ("sev-snp", lambda ls: ET.SubElement(ls, "hostData").__setattr__("text", "AAAA"), "expected 32"),
    ],
)
def test_launch_security_shape(mode: str, mutate: Callable[[ET.Element], object], message: str) -> None:
    dom = clean(launch_security=mode)
    mutate(find(dom, "launchSecurity"))
    found = [f for f in lint_domain(text(dom)) if f.rule == "launch-security"]
    assert len(found) == 1 and message in found[0].message


def test_snp_blobs_of_the_right_size_pass() -> None:
    dom = clean(launch_security="sev-snp")
    ls = find(dom, "launchSecurity")
    ls.set("authorKey", "yes")
    for tag, size in (("idBlock", 96), ("idAuth", 4096), ("hostData", 32), ("guestVisibleWorkarounds", 16)):
        ET.SubElement(ls, tag).text = base64.b64encode(bytes(size)).decode()
    assert lint_domain(text(dom)) == []


def test_attested_pflash_loader_must_be_stateless() -> None:
    dom = clean(dh_cert=DH, session=SESSION)
    find(dom, "os/loader").attrib.pop("stateless")
    found = lint_domain(text(dom))
    assert [(f.rule, f.path) for f in found] == [("nvram-attested", "/domain/os/loader")]


def test_kernel_hashes_without_kernel_and_nvram_with_measured_boot() -> None:
    dom = clean()
    find(dom, "launchSecurity").set("kernelHashes", "yes")
    found = lint_domain(text(dom))
    assert [(f.rule, f.path) for f in found] == [
        ("nvram-attested", "/domain/os/nvram"),
        ("kernel-hashes", "/domain/launchSecurity"),
    ]


def test_units_of_memory_are_understood() -> None:
    dom = clean()
    find(dom, "memory").set("unit", "GiB")
    find(dom, "memory").text = "1"
    find(dom, "currentMemory").set("unit", "MiB")
    find(dom, "currentMemory").text = "1024"
    find(dom, "memtune/hard_limit").set("unit", "M")
    find(dom, "memtune/hard_limit").text = "1280"
    assert lint_domain(text(dom)) == []
    find(dom, "memtune/hard_limit").text = "1279"
    assert rules(lint_domain(text(dom))) == ["hard-limit-low"]


def test_the_guides_q35_example() -> None:
    found = lint_domain((DATA / "guide-q35.xml").read_bytes())
    assert [(f.rule, f.path) for f in found] == [("virtio-net-rom", "/domain/devices/interface")]


def test_the_guides_i440fx_example() -> None:
    found = lint_domain((DATA / "guide-i440fx.xml").read_bytes())
    assert rules(found) == ["machine-i440fx", "virtio-iommu", "virtio-net-rom"]
    assert {f.path for f in found if f.rule != "machine-i440fx"} == {"/domain/devices/interface"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"", "well-formed"),
        (b"<domain", "well-formed"),
        (b"<network/>", "<network>"),
        (b'<!DOCTYPE d [<!ENTITY a "aaaa">]><domain>&a;</domain>', "DOCTYPE"),
        ("<domain><name>\u00e9</name>", "well-formed"),
        (b"\xff\xfe<domain/>", "well-formed"),
    ],
)
def test_bad_documents_are_format_errors(doc: bytes | str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        lint_domain(doc)


def test_deeply_nested_document_does_not_crash() -> None:
    doc = "<domain>" + "<a>" * 5000 + "</a>" * 5000 + "</domain>"
    assert rules(lint_domain(doc)) == ["firmware-seabios", "machine-i440fx", "memory-not-pinned", "not-sev"]


def test_parse_domain_accepts_an_xml_declaration() -> None:
    assert parse_domain("<?xml version='1.0' encoding='UTF-8'?>\n<domain/>").tag == "domain"


def test_schema_check_without_validator(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-validator")
    result = schema_check("<domain/>", validator=missing)
    assert not result.checked and result.ok and "could not run" in result.note
    assert schema_finding(result) is None


def test_schema_rule_fires_on_a_schema_invalid_document() -> None:
    # the guide's own q35 example has an <rng> without <backend>, which the schema rejects
    result = schema_check((DATA / "guide-q35.xml").read_bytes())
    assert result.checked and not result.ok
    finding = schema_finding(result)
    assert finding is not None and finding.rule == "schema" and finding.severity == "error"


def test_schema_knows_snp_reads_the_schema(tmp_path: Path) -> None:
    (tmp_path / "domaincommon.rng").write_text("<value>sev</value>")
    assert not schema_knows_snp((tmp_path,))
    (tmp_path / "domaincommon.rng").write_text("<value>sev-snp</value>")
    assert schema_knows_snp((tmp_path,))
    assert not schema_knows_snp((tmp_path / "nothing",))


_TAGS = ["os", "type", "loader", "nvram", "devices", "interface", "model", "driver", "rom", "disk", "target"]
_TAGS += ["controller", "rng", "memballoon", "launchSecurity", "policy", "dhCert", "session", "memtune"]
_TAGS += ["hard_limit", "memoryBacking", "locked", "features", "smm", "memory", "currentMemory", "input"]
_ATTRS = ["type", "model", "machine", "bus", "iommu", "enabled", "unit", "state", "firmware", "device"]
_VALUES = ["virtio", "sev", "sev-snp", "on", "off", "no", "pc", "q35", "scsi", "GiB", "x", "", "efi"]


def _trees(depth: int) -> st.SearchStrategy[ET.Element]:
    def build(tag: str, attrs: dict[str, str], text: str | None, kids: list[ET.Element]) -> ET.Element:
        el = ET.Element(tag, attrs)
        el.text = text
        el.extend(kids)
        return el

    leaf_text = st.none() | st.sampled_from(
        ["0x3", "0x30000", "1024", "-1", "0x", "junk", "AAAA", "99999999999"]
    )
    kids = st.just([]) if depth == 0 else st.lists(_trees(depth - 1), max_size=4)
    return st.builds(
        build,
        st.sampled_from(_TAGS),
        st.dictionaries(st.sampled_from(_ATTRS), st.sampled_from(_VALUES), max_size=3),
        leaf_text,
        kids,
    )


@settings(max_examples=100)
@given(st.lists(_trees(3), max_size=6))
def test_lint_never_crashes_on_odd_domains(children: list[ET.Element]) -> None:
    dom = ET.Element("domain")
    dom.extend(children)
    for finding in lint_domain(ET.tostring(dom)):
        assert finding.rule in RULES
        assert finding.severity == RULES[finding.rule][0]
        assert finding.path.startswith("/domain")
