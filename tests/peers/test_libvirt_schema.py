"""Peer check: libvirt itself accepts every domain ``sevbox libvirt xml`` makes.

Two real libvirt tools (Debian libvirt-clients, installed by scripts/setup):

* ``virt-xml-validate FILE domain`` (libvirt's RelaxNG schema) on every mode and option combination;
* ``virsh -c test:///default define`` + ``dumpxml`` (libvirt's own parser and formatter, in memory,
  no daemon): libvirt reads the launchSecurity we wrote back unchanged, and the domain as libvirt
  normalises it (defaults filled in) still passes our lint.

libvirt learnt ``<launchSecurity type='sev-snp'>`` in 10.5.0; Debian bookworm has 9.0.0. Against
such a schema the SNP documents are validated without that one element (the rest of the document is
still checked by libvirt), and the test asserts that the old schema is the only reason.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sevbox.libvirt.domain import DomainSpec, domain_xml
from sevbox.libvirt.lint import lint_domain, schema_check, schema_knows_snp

pytestmark = pytest.mark.peers

DH = base64.b64encode(bytes(0x824)).decode()  # a GODH certificate's size, as base64 text
SESSION = base64.b64encode(bytes(0x80)).decode()  # a session blob's size
DATA = Path(__file__).resolve().parents[1] / "data" / "libvirt"


def combos() -> list[tuple[str, DomainSpec]]:
    out: list[tuple[str, DomainSpec]] = []
    for mode, attested, network, locked, block in itertools.product(
        ("sev", "sev-es", "sev-snp"), (False, True), (None, "default"), (False, True), (False, True)
    ):
        if attested and mode == "sev-snp":
            continue
        spec = DomainSpec(
            name=f"g-{mode}",
            memory_mib=2048,
            vcpus=2,
            disk="/dev/vg0/g" if block else "/var/lib/libvirt/images/g.qcow2",
            launch_security=mode,
            network=network,
            locked_memory=locked,
            dh_cert=DH if attested else None,
            session=SESSION if attested else None,
            cbitpos=47,
            reduced_phys_bits=1,
        )
        label = f"{mode}-{'att' if attested else 'plain'}-{network or 'nonet'}-"
        label += f"{'locked' if locked else 'limit'}-{'blk' if block else 'file'}"
        out.append((label, spec))
        if block and locked:  # and once per mode/attestation/network: a measured direct kernel boot
            kernel = dataclasses.replace(
                spec, kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0 quiet"
            )
            out.append((label + "-kernel", kernel))
    return out


COMBOS = combos()


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("virt-xml-validate")
    assert exe is not None, "scripts/setup installs libvirt-clients (virt-xml-validate)"
    return subprocess.run([exe, str(path), "domain"], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("label", "spec"), COMBOS, ids=[c[0] for c in COMBOS])
def test_virt_xml_validate_accepts(tmp_path: Path, label: str, spec: DomainSpec) -> None:
    text = domain_xml(spec)
    path = tmp_path / f"{label}.xml"
    snp_on_old_schema = spec.launch_security == "sev-snp" and not schema_knows_snp()
    if snp_on_old_schema:
        # the whole document fails only because of <launchSecurity type='sev-snp'> ...
        whole_path = tmp_path / f"{label}.whole.xml"
        whole_path.write_text(text)
        whole = validate(whole_path)
        assert whole.returncode != 0 and "launchSecurity" in whole.stdout + whole.stderr
        root = ET.fromstring(text)
        root.remove(root.find("launchSecurity"))  # type: ignore[arg-type]
        text = ET.tostring(root, encoding="unicode")
    path.write_text(text)
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # and lint's own schema step agrees
    checked = schema_check(domain_xml(spec))
    assert checked.checked and checked.ok, checked.output
    assert bool(checked.note) == snp_on_old_schema


def virsh_roundtrip(text: str, tmp_path: Path) -> str:
    exe = shutil.which("virsh")
    assert exe is not None, "scripts/setup installs libvirt-clients (virsh)"
    path = tmp_path / "dom.xml"
    path.write_text(text)
    name = ET.fromstring(text).findtext("name")
    proc = subprocess.run(
        [exe, "-q", "-c", "test:///default", f"define {path}; dumpxml {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"<domain.*</domain>", proc.stdout, re.S)
    assert match is not None, proc.stdout
    return match.group(0)


@pytest.mark.parametrize(
    ("label", "spec"),
    [c for c in COMBOS if c[1].launch_security != "sev-snp"],
    ids=[c[0] for c in COMBOS if c[1].launch_security != "sev-snp"],
)
def test_libvirt_parser_round_trips(tmp_path: Path, label: str, spec: DomainSpec) -> None:
    ours = ET.fromstring(domain_xml(spec))
    dumped_text = virsh_roundtrip(domain_xml(spec), tmp_path)
    theirs = ET.fromstring(dumped_text)
    for field in ("cbitpos", "reducedPhysBits", "dhCert", "session"):
        assert theirs.findtext(f"launchSecurity/{field}") == ours.findtext(f"launchSecurity/{field}"), field
    assert int(theirs.findtext("launchSecurity/policy") or "", 16) == int(
        ours.findtext("launchSecurity/policy") or "", 16
    )
    assert theirs.find("os/loader").attrib == ours.find("os/loader").attrib  # type: ignore[union-attr]
    assert theirs.find("launchSecurity").attrib == ours.find("launchSecurity").attrib  # type: ignore[union-attr]
    for field in ("kernel", "initrd", "cmdline"):
        assert theirs.findtext(f"os/{field}") == ours.findtext(f"os/{field}"), field
    assert lint_domain(dumped_text) == [], label


def test_libvirt_rejects_what_old_schema_lacks(tmp_path: Path) -> None:
    """Documents the SNP situation on this host: virsh 9.0 refuses sev-snp; newer libvirt accepts it."""
    spec = DomainSpec(name="snp", memory_mib=1024, vcpus=1, disk="/x.raw", launch_security="sev-snp")
    path = tmp_path / "snp.xml"
    path.write_text(domain_xml(spec))
    proc = subprocess.run(
        [shutil.which("virsh") or "virsh", "-q", "-c", "test:///default", f"define {path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if schema_knows_snp():
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and "sev-snp" in proc.stderr


def test_guide_examples_fail_the_schema_for_their_rng() -> None:
    """The guide's examples have <rng model='virtio'> without <backend>; libvirt's schema says no."""
    for name in ("guide-q35.xml", "guide-i440fx.xml"):
        result = validate(DATA / name)
        assert result.returncode != 0
        root = ET.fromstring((DATA / name).read_text())
        rng = root.find("devices/rng")
        assert rng is not None
        ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
        fixed = schema_check(ET.tostring(root))
        assert fixed.checked and fixed.ok, fixed.output
