"""libvirt domain XML for SEV, SEV-ES and SEV-SNP guests. Pure: a :class:`DomainSpec` in, XML text out.

Every rule of libvirt's "Launch security with AMD SEV" guide (kbase/launch_security_sev) is applied,
and :mod:`sevbox.libvirt.lint` checks the same rules, so what this module makes lints clean:

* machine q35 (i440fx is discouraged and would need virtio-non-transitional devices);
* OVMF (UEFI) as a pflash loader, never SeaBIOS; **stateless** (no NVRAM) when the launch is
  attested (``dhCert``/``session`` given), SNP, or a measured direct kernel boot, so no unmeasured
  variable store feeds the guest;
  SNP firmware is a ``rom`` loader (QEMU loads SNP firmware with ``-bios``, not pflash);
* ``<launchSecurity type='sev'>`` with cbitpos, reducedPhysBits and the policy (SEV-ES is
  ``type='sev'`` with the policy's ES bit, 0x4), or ``<launchSecurity type='sev-snp'>`` with the
  64-bit SNP guest policy;
* every virtio device has ``<driver iommu='on'/>``; disks sit on virtio-scsi (a virtio-blk boot disk
  fails with older guest kernels and strains swiotlb); virtio-net has ``<rom enabled='no'/>`` (iPXE
  does not know SEV); the balloon is off (encrypted memory is pinned; ballooning cannot return it);
* memory is pinned: a ``<hard_limit>`` of guest RAM + 256 MiB (the guide's starting point), or
  ``<memoryBacking><locked/>`` (the guide's preferred form; then cap ``machine.slice`` on the host);
* SMM is off for SEV-ES and SNP (QEMU does not support SMM with encrypted register state);
* a direct kernel boot (``kernel``/``initrd``/``cmdline``) sets ``kernelHashes='yes'`` so the launch
  measurement covers the kernel, initrd and command line (QEMU's ``kernel-hashes=on``; the firmware
  must carry the SEV hashes table, e.g. edk2's AmdSev build).

Defaults for the C-bit position and reduced physical bits come from the host when it has SEV (the
CLI asks :func:`sevbox.host.probe.sev_params`); otherwise :data:`DEFAULT_CBITPOS` (51, the value on
AMD Milan and Genoa hosts; Naples and Rome use 47) and :data:`DEFAULT_REDUCED_PHYS_BITS` (1).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sevbox.errors import FormatError, UsageError
from sevbox.sev.policy import SevPolicy, SnpPolicy

__all__ = [
    "DEFAULT_CBITPOS",
    "DEFAULT_FIRMWARE",
    "DEFAULT_NVRAM_TEMPLATE",
    "DEFAULT_POLICY",
    "DEFAULT_REDUCED_PHYS_BITS",
    "DEFAULT_SNP_FIRMWARE",
    "DH_CERT_SIZE",
    "HARD_LIMIT_EXTRA_KIB",
    "MODES",
    "SESSION_SIZE",
    "DomainSpec",
    "check_blob",
    "domain_xml",
]

MODES = ("sev", "sev-es", "sev-snp")
DEFAULT_CBITPOS = 51
DEFAULT_REDUCED_PHYS_BITS = 1
DEFAULT_FIRMWARE = "/usr/share/OVMF/OVMF_CODE_4M.fd"  # Debian's ovmf package
DEFAULT_NVRAM_TEMPLATE = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# SNP firmware is loaded as one ROM image (code and variables together), not as split pflash.
DEFAULT_SNP_FIRMWARE = "/usr/share/ovmf/OVMF.fd"  # Debian's unified image; see the CLI's warning
DEFAULT_EMULATOR = "/usr/bin/qemu-system-x86_64"
# SEV: NODBG|NOKS. SEV-ES: NODBG|NOKS|ES. SNP: reserved bit 17 (must be one) + SMT allowed.
DEFAULT_POLICY = {"sev": 0x0003, "sev-es": 0x0007, "sev-snp": 0x30000}
HARD_LIMIT_EXTRA_KIB = 256 * 1024
DH_CERT_SIZE = 0x824  # an SEV certificate (the guest owner's GODH), AMD SEV API #55766
SESSION_SIZE = 0x80  # the LAUNCH_START session buffer (nonce, wrapped TEK/TIK, IV, MACs)


@dataclass(frozen=True, kw_only=True, slots=True)
class DomainSpec:
    """What ``sevbox libvirt xml`` asks for. Paths must be absolute; blobs are base64 text."""

    name: str
    memory_mib: int
    vcpus: int
    disk: str
    launch_security: str = "sev"
    network: str | None = None
    firmware: str | None = None  # None: DEFAULT_FIRMWARE (SNP: DEFAULT_SNP_FIRMWARE)
    nvram_template: str | None = None  # None: DEFAULT_NVRAM_TEMPLATE with the default firmware
    policy: int | None = None  # None: DEFAULT_POLICY[mode]
    dh_cert: str | None = None
    session: str | None = None
    locked_memory: bool = False
    hard_limit_kib: int | None = None  # None (and not locked): memory + 256 MiB
    cbitpos: int = DEFAULT_CBITPOS
    reduced_phys_bits: int = DEFAULT_REDUCED_PHYS_BITS
    kernel: str | None = None  # direct kernel boot: measured via kernelHashes='yes'
    initrd: str | None = None
    cmdline: str | None = None
    emulator: str = DEFAULT_EMULATOR
    note: str = ""  # one line put in an XML comment (e.g. where cbitpos came from)

    @property
    def attested(self) -> bool:
        return self.dh_cert is not None

    @property
    def memory_kib(self) -> int:
        return self.memory_mib * 1024

    def effective_policy(self) -> int:
        return DEFAULT_POLICY[self.launch_security] if self.policy is None else self.policy

    def effective_hard_limit_kib(self) -> int | None:
        if self.locked_memory:
            return None
        return self.memory_kib + HARD_LIMIT_EXTRA_KIB if self.hard_limit_kib is None else self.hard_limit_kib


def check_blob(text: str, size: int, what: str) -> bytes:
    """Decode base64 ``text`` and check it is ``size`` bytes (FormatError otherwise)."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not base64", what=what) from None
    if len(raw) != size:
        raise FormatError(f"{what} is {len(raw)} bytes, expected {size} ({size:#x})", what=what)
    return raw


def _check_path(path: str, what: str) -> None:
    if not path.startswith("/") or "\n" in path or "\0" in path:
        raise UsageError(f"{what} must be an absolute path, not {path!r}")


def _validate(spec: DomainSpec) -> None:
    if spec.launch_security not in MODES:
        raise UsageError(f"launch security must be one of {', '.join(MODES)}, not {spec.launch_security!r}")
    name = spec.name
    if not name or "/" in name or any(c.isspace() and c != " " for c in name) or name != name.strip():
        raise UsageError(f"bad domain name {name!r} (no '/', no leading/trailing space, not empty)")
    for value, what, low, high in (
        (spec.memory_mib, "memory (MiB)", 64, 1 << 30),
        (spec.vcpus, "vCPUs", 1, 4096),
        (spec.cbitpos, "cbitpos", 32, 63),
        (spec.reduced_phys_bits, "reduced-phys-bits", 1, 63),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"{what} must be an integer {low}..{high}, not {value!r}")
    _check_path(spec.disk, "the disk")
    _check_path(spec.emulator, "the emulator")
    if spec.firmware is not None:
        _check_path(spec.firmware, "the firmware")
    if spec.nvram_template is not None:
        _check_path(spec.nvram_template, "the NVRAM template")
    for path, what in ((spec.kernel, "the kernel"), (spec.initrd, "the initrd")):
        if path is not None:
            _check_path(path, what)
    if spec.kernel is None and (spec.initrd is not None or spec.cmdline is not None):
        raise UsageError("--initrd and --cmdline need --kernel")
    if spec.cmdline is not None and any(c in spec.cmdline for c in "\0\n"):
        raise UsageError("the kernel command line must be one line")
    if spec.network is not None and (not spec.network or "'" in spec.network or "/" in spec.network):
        raise UsageError(f"bad network name {spec.network!r}")
    if spec.locked_memory and spec.hard_limit_kib is not None:
        raise UsageError("choose --locked-memory or --hard-limit, not both")
    if spec.hard_limit_kib is not None and spec.hard_limit_kib < spec.memory_kib + HARD_LIMIT_EXTRA_KIB:
        raise UsageError(
            f"hard limit {spec.hard_limit_kib} KiB is below guest RAM + 256 MiB "
            f"({spec.memory_kib + HARD_LIMIT_EXTRA_KIB} KiB); QEMU would be killed"
        )
    policy = spec.effective_policy()
    if spec.launch_security == "sev-snp":
        if spec.dh_cert is not None or spec.session is not None:
            raise UsageError("--dh-cert/--session are for SEV and SEV-ES; SNP attests from inside the guest")
        try:
            SnpPolicy.decode(policy)
        except FormatError as err:
            raise UsageError(f"bad SNP policy {policy:#x}: {err}") from None
    else:
        try:
            sev = SevPolicy.decode(policy)
        except FormatError as err:
            raise UsageError(f"bad SEV policy {policy:#x}: {err}") from None
        if sev.reserved:
            raise UsageError(f"SEV policy {policy:#x} sets reserved bits 15:6")
        if spec.launch_security == "sev-es" and not sev.es:
            raise UsageError(f"SEV-ES needs the policy's ES bit (0x4); {policy:#x} lacks it")
        if spec.launch_security == "sev" and sev.es:
            raise UsageError(f"policy {policy:#x} has the ES bit: use --launch-security sev-es")
        if (spec.dh_cert is None) != (spec.session is None):
            raise UsageError("an attested launch needs both --dh-cert and --session")
        if spec.dh_cert is not None and spec.session is not None:
            check_blob(spec.dh_cert, DH_CERT_SIZE, "dhCert (GODH certificate)")
            check_blob(spec.session, SESSION_SIZE, "session blob")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _iommu(parent: ET.Element) -> None:
    _sub(parent, "driver", iommu="on")


def _os(spec: DomainSpec, dom: ET.Element) -> None:
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    firmware = spec.firmware or DEFAULT_FIRMWARE
    if spec.launch_security == "sev-snp":
        _sub(os_el, "loader", spec.firmware or DEFAULT_SNP_FIRMWARE, type="rom", stateless="yes")
    elif spec.attested or spec.kernel is not None:
        # a measured launch: no variable store the measurement does not cover
        _sub(os_el, "loader", firmware, readonly="yes", type="pflash", stateless="yes")
    else:
        _sub(os_el, "loader", firmware, readonly="yes", type="pflash")
        template = spec.nvram_template
        if template is None and spec.firmware in (None, DEFAULT_FIRMWARE):
            template = DEFAULT_NVRAM_TEMPLATE
        if template is not None:
            _sub(os_el, "nvram", template=template)
    if spec.kernel is not None:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd is not None:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline is not None:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")


def _devices(spec: DomainSpec, dom: ET.Element) -> None:
    devices = _sub(dom, "devices")
    _sub(devices, "emulator", spec.emulator)
    is_block = spec.disk.startswith("/dev/")
    disk = _sub(devices, "disk", type="block" if is_block else "file", device="disk")
    fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
    _sub(disk, "driver", name="qemu", type=fmt, cache="none" if is_block else "writeback")
    if is_block:
        _sub(disk, "source", dev=spec.disk)
    else:
        _sub(disk, "source", file=spec.disk)
    _sub(disk, "target", dev="sda", bus="scsi")
    _sub(disk, "address", type="drive", controller="0", bus="0", target="0", unit="0")
    scsi = _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    _iommu(scsi)
    if spec.network is not None:
        nic = _sub(devices, "interface", type="network")
        _sub(nic, "source", network=spec.network)
        _sub(nic, "model", type="virtio")
        _iommu(nic)
        _sub(nic, "rom", enabled="no")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _iommu(rng)
    _sub(devices, "memballoon", model="none")


def _launch_security(spec: DomainSpec, dom: ET.Element) -> None:
    policy = spec.effective_policy()
    hashes = {"kernelHashes": "yes"} if spec.kernel is not None else {}
    if spec.launch_security == "sev-snp":
        ls = _sub(dom, "launchSecurity", type="sev-snp", **hashes)
        _sub(ls, "cbitpos", str(spec.cbitpos))
        _sub(ls, "reducedPhysBits", str(spec.reduced_phys_bits))
        _sub(ls, "policy", f"{policy:#010x}" if policy <= 0xFFFF_FFFF else f"{policy:#018x}")
        return
    ls = _sub(dom, "launchSecurity", type="sev", **hashes)
    _sub(ls, "cbitpos", str(spec.cbitpos))
    _sub(ls, "reducedPhysBits", str(spec.reduced_phys_bits))
    _sub(ls, "policy", f"{policy:#06x}" if policy <= 0xFFFF else f"{policy:#010x}")
    if spec.dh_cert is not None and spec.session is not None:
        _sub(ls, "dhCert", "".join(spec.dh_cert.split()))
        _sub(ls, "session", "".join(spec.session.split()))


def domain_xml(spec: DomainSpec) -> str:
    """The complete domain XML (text, newline-terminated) for ``spec``; UsageError on bad options."""
    _validate(spec)
    dom = ET.Element("domain", type="kvm")
    comment = f" sevbox libvirt xml: {spec.launch_security}"
    if spec.note:
        comment += f"; {spec.note}"
    dom.append(ET.Comment(comment.replace("--", "- -") + " "))
    _sub(dom, "name", spec.name)
    _sub(dom, "memory", str(spec.memory_kib), unit="KiB")
    _sub(dom, "currentMemory", str(spec.memory_kib), unit="KiB")
    if spec.locked_memory:
        backing = _sub(dom, "memoryBacking")
        _sub(backing, "locked")
    hard_limit = spec.effective_hard_limit_kib()
    if hard_limit is not None:
        memtune = _sub(dom, "memtune")
        _sub(memtune, "hard_limit", str(hard_limit), unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    _os(spec, dom)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.launch_security != "sev":
        _sub(features, "smm", state="off")
    _sub(dom, "cpu", mode="host-passthrough", check="none")
    clock = _sub(dom, "clock", offset="utc")
    _sub(clock, "timer", name="hpet", present="no")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    pm = _sub(dom, "pm")
    _sub(pm, "suspend-to-mem", enabled="no")
    _sub(pm, "suspend-to-disk", enabled="no")
    _devices(spec, dom)
    _launch_security(spec, dom)
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"
