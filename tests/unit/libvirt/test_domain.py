"""libvirt domain XML generation: every rule of the SEV guide, every mode, bad options."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError, UsageError
from sevbox.libvirt.domain import (
    DEFAULT_FIRMWARE,
    DEFAULT_NVRAM_TEMPLATE,
    DH_CERT_SIZE,
    SESSION_SIZE,
    DomainSpec,
    domain_xml,
)
from sevbox.libvirt.lint import lint_domain
from sevbox.sev.policy import SevPolicy, SnpPolicy

DH = base64.b64encode(bytes(range(256)) * 8 + bytes(DH_CERT_SIZE - 2048)).decode()
SESSION = base64.b64encode(bytes(SESSION_SIZE)).decode()


def spec(**kw: object) -> DomainSpec:
    base: dict[str, object] = {"name": "guest", "memory_mib": 2048, "vcpus": 2, "disk": "/srv/guest.qcow2"}
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def parse(s: DomainSpec) -> ET.Element:
    return ET.fromstring(domain_xml(s))


@pytest.mark.parametrize("mode", ["sev", "sev-es", "sev-snp"])
def test_every_mode_is_lint_clean(mode: str) -> None:
    text = domain_xml(spec(launch_security=mode, network="default"))
    assert lint_domain(text) == []


def test_sev_domain_follows_the_guide() -> None:
    dom = parse(spec(network="default", cbitpos=47, reduced_phys_bits=5))
    assert dom.get("type") == "kvm"
    assert dom.findtext("name") == "guest"
    assert dom.findtext("memory") == str(2048 * 1024)
    assert dom.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    loader = dom.find("os/loader")
    assert loader is not None and loader.text == DEFAULT_FIRMWARE and loader.get("type") == "pflash"
    assert dom.find("os/nvram").get("template") == DEFAULT_NVRAM_TEMPLATE  # type: ignore[union-attr]
    ls = dom.find("launchSecurity")
    assert ls is not None and ls.get("type") == "sev"
    assert (ls.findtext("cbitpos"), ls.findtext("reducedPhysBits")) == ("47", "5")
    policy = SevPolicy.decode(int(ls.findtext("policy") or "", 16))
    assert policy.nodbg and policy.noks and not policy.es
    assert dom.findtext("memtune/hard_limit") == str(2048 * 1024 + 256 * 1024)
    assert dom.find("memoryBacking") is None
    assert dom.find("features/smm") is None
    devices = dom.find("devices")
    assert devices is not None
    disk_target = devices.find("disk/target")
    assert disk_target is not None and disk_target.get("bus") == "scsi"
    assert devices.find("disk/driver").get("type") == "qcow2"  # type: ignore[union-attr]
    scsi = devices.find("controller[@model='virtio-scsi']")
    assert scsi is not None and scsi.find("driver").get("iommu") == "on"  # type: ignore[union-attr]
    nic = devices.find("interface")
    assert nic is not None and nic.find("source").get("network") == "default"  # type: ignore[union-attr]
    assert nic.find("driver").get("iommu") == "on"  # type: ignore[union-attr]
    assert nic.find("rom").get("enabled") == "no"  # type: ignore[union-attr]
    assert devices.find("rng/driver").get("iommu") == "on"  # type: ignore[union-attr]
    assert devices.find("memballoon").get("model") == "none"  # type: ignore[union-attr]


def test_sev_es_has_es_bit_and_smm_off() -> None:
    dom = parse(spec(launch_security="sev-es"))
    ls = dom.find("launchSecurity")
    assert ls is not None and ls.get("type") == "sev"
    assert SevPolicy.decode(int(ls.findtext("policy") or "", 16)).es
    assert dom.find("features/smm").get("state") == "off"  # type: ignore[union-attr]


def test_snp_uses_its_own_element_and_a_stateless_rom_loader() -> None:
    dom = parse(spec(launch_security="sev-snp", firmware="/opt/ovmf/OVMF.amdsev.fd"))
    ls = dom.find("launchSecurity")
    assert ls is not None and ls.get("type") == "sev-snp"
    policy = SnpPolicy.decode(int(ls.findtext("policy") or "", 16))
    assert policy.smt and not policy.debug
    loader = dom.find("os/loader")
    assert loader is not None and loader.get("type") == "rom" and loader.get("stateless") == "yes"
    assert loader.text == "/opt/ovmf/OVMF.amdsev.fd"
    assert dom.find("os/nvram") is None
    assert dom.find("features/smm").get("state") == "off"  # type: ignore[union-attr]


def test_attested_launch_is_stateless_and_carries_the_blobs() -> None:
    dom = parse(spec(dh_cert=DH, session=SESSION))
    assert dom.find("os/nvram") is None
    assert dom.find("os/loader").get("stateless") == "yes"  # type: ignore[union-attr]
    assert dom.findtext("launchSecurity/dhCert") == DH
    assert dom.findtext("launchSecurity/session") == SESSION
    assert lint_domain(domain_xml(spec(dh_cert=DH, session=SESSION))) == []


@pytest.mark.parametrize("mode", ["sev", "sev-es", "sev-snp"])
def test_direct_kernel_boot_is_measured_and_stateless(mode: str) -> None:
    s = spec(
        launch_security=mode,
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd.img",
        cmdline="console=ttyS0 swiotlb=262144",
    )
    dom = parse(s)
    assert dom.find("launchSecurity").get("kernelHashes") == "yes"  # type: ignore[union-attr]
    assert dom.findtext("os/kernel") == "/boot/vmlinuz"
    assert dom.findtext("os/initrd") == "/boot/initrd.img"
    assert dom.findtext("os/cmdline") == "console=ttyS0 swiotlb=262144"
    assert dom.find("os/boot") is None and dom.find("os/nvram") is None
    assert dom.find("os/loader").get("stateless") == "yes"  # type: ignore[union-attr]
    assert lint_domain(domain_xml(s)) == []
    assert parse(spec()).find("launchSecurity").get("kernelHashes") is None  # type: ignore[union-attr]


def test_memory_pinning_choices() -> None:
    locked = parse(spec(locked_memory=True))
    assert locked.find("memoryBacking/locked") is not None and locked.find("memtune") is None
    explicit = parse(spec(hard_limit_kib=4 * 1024 * 1024))
    assert explicit.findtext("memtune/hard_limit") == str(4 * 1024 * 1024)
    with pytest.raises(UsageError, match="not both"):
        domain_xml(spec(locked_memory=True, hard_limit_kib=4 * 1024 * 1024))
    with pytest.raises(UsageError, match="256 MiB"):
        domain_xml(spec(hard_limit_kib=2048 * 1024))


def test_block_device_disk_and_custom_firmware() -> None:
    dom = parse(spec(disk="/dev/vg0/guest", firmware="/opt/OVMF_CODE.fd"))
    disk = dom.find("devices/disk")
    assert disk is not None and disk.get("type") == "block"
    assert disk.find("source").get("dev") == "/dev/vg0/guest"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert dom.find("os/nvram") is None  # no template known for a custom firmware
    with_template = parse(spec(firmware="/opt/OVMF_CODE.fd", nvram_template="/opt/OVMF_VARS.fd"))
    assert with_template.find("os/nvram").get("template") == "/opt/OVMF_VARS.fd"  # type: ignore[union-attr]


def test_note_goes_into_a_comment_and_cannot_break_it() -> None:
    text = domain_xml(spec(note="cbitpos from host -- really"))
    assert "<!-- sevbox libvirt xml: sev; cbitpos from host - - really -->" in text
    ET.fromstring(text)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"launch_security": "tdx"}, "launch security"),
        ({"name": ""}, "domain name"),
        ({"name": "a/b"}, "domain name"),
        ({"name": "a\nb"}, "domain name"),
        ({"memory_mib": 0}, "memory"),
        ({"vcpus": 0}, "vCPUs"),
        ({"vcpus": True}, "vCPUs"),
        ({"cbitpos": 20}, "cbitpos"),
        ({"reduced_phys_bits": 0}, "reduced-phys-bits"),
        ({"disk": "relative.img"}, "absolute"),
        ({"firmware": "OVMF.fd"}, "absolute"),
        ({"network": "a'b"}, "network"),
        ({"policy": 0x7}, "sev-es"),
        ({"launch_security": "sev-es", "policy": 0x3}, "ES bit"),
        ({"policy": 0x40}, "reserved"),
        ({"policy": 1 << 40}, "SEV policy"),
        ({"launch_security": "sev-snp", "policy": 0x0}, "SNP policy"),
        ({"launch_security": "sev-snp", "dh_cert": DH, "session": SESSION}, "SNP"),
        ({"dh_cert": DH}, "both"),
        ({"session": SESSION}, "both"),
        ({"initrd": "/boot/initrd.img"}, "need --kernel"),
        ({"cmdline": "quiet"}, "need --kernel"),
        ({"kernel": "vmlinuz"}, "absolute"),
        ({"kernel": "/boot/vmlinuz", "cmdline": "a\nb"}, "one line"),
    ],
)
def test_bad_options_are_usage_errors(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        domain_xml(spec(**kw))


@pytest.mark.parametrize(
    ("dh", "session"),
    [
        ("not base64!", SESSION),
        (base64.b64encode(bytes(100)).decode(), SESSION),
        (DH, base64.b64encode(bytes(SESSION_SIZE - 1)).decode()),
    ],
)
def test_bad_blobs_are_format_errors(dh: str, session: str) -> None:
    with pytest.raises(FormatError):
        domain_xml(spec(dh_cert=dh, session=session))


@settings(max_examples=60)
@given(
    mode=st.sampled_from(["sev", "sev-es", "sev-snp"]),
    network=st.none() | st.sampled_from(["default", "br0"]),
    locked=st.booleans(),
    attested=st.booleans(),
    block=st.booleans(),
    memory=st.integers(64, 1 << 20),
    vcpus=st.integers(1, 512),
    cbitpos=st.integers(32, 63),
    rpb=st.integers(1, 63),
    sev_extra=st.sampled_from([0, 0x08, 0x10, 0x20, 0x38]),
    kernel=st.booleans(),
)
def test_generated_domains_always_lint_clean(
    *,
    mode: str,
    network: str | None,
    locked: bool,
    attested: bool,
    block: bool,
    memory: int,
    vcpus: int,
    cbitpos: int,
    rpb: int,
    sev_extra: int,
    kernel: bool,
) -> None:
    attested = attested and mode != "sev-snp"
    policy = None if mode == "sev-snp" else (0x7 if mode == "sev-es" else 0x3) | sev_extra
    s = spec(
        launch_security=mode,
        network=network,
        locked_memory=locked,
        dh_cert=DH if attested else None,
        session=SESSION if attested else None,
        disk="/dev/sdz" if block else "/srv/img.raw",
        memory_mib=memory,
        vcpus=vcpus,
        cbitpos=cbitpos,
        reduced_phys_bits=rpb,
        policy=policy,
        kernel="/boot/vmlinuz" if kernel else None,
        cmdline="console=ttyS0" if kernel else None,
    )
    assert lint_domain(domain_xml(s)) == []
