"""Check a libvirt domain XML against every rule of libvirt's "Launch security with AMD SEV" guide.

:func:`lint_domain` is pure (XML text in, findings out). :func:`schema_check` has effects: it runs
libvirt's own ``virt-xml-validate FILE domain`` when that program is installed.

Rules (id, severity, what it catches)::

    not-sev              error    no <launchSecurity type='sev'|'sev-snp'>: the guest is not encrypted
    firmware-seabios     error    no UEFI loader (SeaBIOS is the default) or a SeaBIOS loader
    machine-i440fx       warning  legacy PC machine type (the guide discourages it; q35 is preferred)
    virtio-transitional  error    on i440fx, a virtio device not using model virtio-non-transitional
    virtio-iommu         error    a virtio device without <driver iommu='on'/>
    virtio-net-rom       error    a virtio NIC whose option ROM is enabled (no <rom enabled='no'/>)
    memory-not-pinned    error    neither <memoryBacking><locked/> nor a <memtune><hard_limit>
    hard-limit-low       warning  a hard limit below guest RAM + 256 MiB (QEMU may be killed)
    nvram-attested       error    an NVRAM store (explicit, or the one libvirt makes for a read-only
                                  pflash loader that is not stateless) with an attested launch
                                  (dhCert/session), with SNP, or with a measured kernel boot
    virtio-blk-boot      warning  a virtio-blk disk (older guest kernels cannot boot from it; swiotlb)
    policy-debug         warning  a guest policy that allows debugging (SEV NODBG clear, SNP DEBUG set)
    policy-invalid       error    a policy that is not a number or breaks its format
    attest-incomplete    error    dhCert without session, or session without dhCert
    attest-blob          error    dhCert or session that is not base64 of the right size
    smm-encrypted-state  error    SMM on with SEV-ES or SNP (not supported with encrypted state)
    kernel-hashes        warning  a direct kernel boot whose kernel/initrd/cmdline the launch does not
                                  measure (no kernelHashes='yes'), or kernelHashes without a kernel
    launch-security      error    <launchSecurity> content libvirt does not define: an unknown child or
                                  attribute, cbitpos/reducedPhysBits not numbers, SNP blobs (idBlock 96,
                                  idAuth 4096, hostData 32, guestVisibleWorkarounds 16 bytes) of the
                                  wrong size (libvirt's schema only knows sev-snp from 10.5.0 on)
    schema               error    libvirt's schema rejects the document (virt-xml-validate)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevbox.errors import FormatError
from sevbox.libvirt.domain import DH_CERT_SIZE, HARD_LIMIT_EXTRA_KIB, SESSION_SIZE, check_blob
from sevbox.sev.policy import SevPolicy, SnpPolicy

__all__ = [
    "RULES",
    "Finding",
    "SchemaResult",
    "lint_domain",
    "parse_domain",
    "schema_check",
    "schema_finding",
    "schema_knows_snp",
]

RULES: dict[str, tuple[str, str]] = {
    # id -> (severity, one-line summary)
    "not-sev": ("error", "no SEV launch security"),
    "firmware-seabios": ("error", "SeaBIOS or no UEFI loader"),
    "machine-i440fx": ("warning", "legacy i440fx machine type"),
    "virtio-transitional": ("error", "transitional virtio device on i440fx"),
    "virtio-iommu": ("error", "virtio device without iommu='on'"),
    "virtio-net-rom": ("error", "virtio NIC with its option ROM enabled"),
    "memory-not-pinned": ("error", "neither locked memory nor a hard limit"),
    "hard-limit-low": ("warning", "hard limit below guest RAM + 256 MiB"),
    "nvram-attested": ("error", "NVRAM with an attested or SNP launch"),
    "virtio-blk-boot": ("warning", "virtio-blk disk"),
    "policy-debug": ("warning", "policy allows debugging"),
    "policy-invalid": ("error", "malformed guest policy"),
    "attest-incomplete": ("error", "dhCert and session must come together"),
    "attest-blob": ("error", "dhCert/session not base64 of the right size"),
    "smm-encrypted-state": ("error", "SMM with SEV-ES or SNP"),
    "launch-security": ("error", "<launchSecurity> content libvirt does not define"),
    "kernel-hashes": ("warning", "direct kernel boot not covered by the measurement"),
    "schema": ("error", "libvirt's schema rejects the document"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: str  # "error" | "warning"
    path: str  # element path, XPath style: /domain/devices/interface[1]
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }


def _finding(rule: str, path: str, message: str, fix: str) -> Finding:
    return Finding(rule, RULES[rule][0], path, message, fix)


def parse_domain(text: str | bytes) -> ET.Element:
    """Parse domain XML; FormatError when it is not XML or not a <domain>."""
    raw = text.encode() if isinstance(text, str) else text
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        # no DTD means no entity expansion (billion laughs) and no external entities
        raise FormatError("domain XML must not contain a DOCTYPE or entities", what="domain XML")
    try:
        root = ET.fromstring(raw)  # noqa: S314 -- DTDs are refused above
    except ET.ParseError as err:
        raise FormatError(f"not well-formed XML: {err}", what="domain XML") from None
    if root.tag != "domain":
        raise FormatError(f"the root element is <{root.tag}>, not <domain>", what="domain XML")
    return root


def _paths(root: ET.Element) -> dict[int, str]:
    """XPath-style path of every element, by id: /domain/devices/interface[2] ("[n]" only when the
    parent has several children of that name). Iterative: deep documents cannot exhaust the stack."""
    out = {id(root): f"/{root.tag}"}
    stack = [root]
    while stack:
        parent = stack.pop()
        children = [c for c in parent if isinstance(c.tag, str)]
        totals = Counter(c.tag for c in children)
        seen: Counter[str] = Counter()
        for child in children:
            seen[child.tag] += 1
            suffix = f"[{seen[child.tag]}]" if totals[child.tag] > 1 else ""
            out[id(child)] = f"{out[id(parent)]}/{child.tag}{suffix}"
            stack.append(child)
    return out


_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024}
_KIB |= {"mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024, "t": 1024**3}
_KIB |= {"tib": 1024**3, "tb": 1000**4 / 1024}


def _kib(el: ET.Element | None) -> int | None:
    """A libvirt scaled integer in KiB (default unit KiB), or None when absent/unreadable."""
    if el is None or el.text is None:
        return None
    try:
        number = int(el.text.strip())
    except ValueError:
        return None
    unit = (el.get("unit") or "KiB").lower()
    factor = _KIB.get(unit)
    return None if factor is None else int(number * factor)


# libvirt's virtio SCSI controller models -> the virtio flavour each one is
_VIRTIO_SCSI_MODELS = {
    "virtio-scsi": "virtio",
    "virtio-transitional": "virtio-transitional",
    "virtio-non-transitional": "virtio-non-transitional",
}


def _is_virtio_model(model: str | None) -> bool:
    return model is not None and model.startswith("virtio")


def _virtio_devices(devices: ET.Element) -> list[tuple[ET.Element, str]]:
    """(element, model string) for each virtio device the guide's iommu rule covers."""
    found: list[tuple[ET.Element, str]] = []
    for el in devices:
        tag = el.tag
        if tag == "disk":
            target = el.find("target")
            if target is not None and target.get("bus") == "virtio":
                found.append((el, el.get("model") or "virtio"))
        elif tag == "controller":
            model = el.get("model")
            if el.get("type") == "virtio-serial":
                found.append((el, model or "virtio"))
            elif el.get("type") == "scsi" and model in _VIRTIO_SCSI_MODELS:
                found.append((el, _VIRTIO_SCSI_MODELS[model]))
        elif tag == "interface":
            model_el = el.find("model")
            model = model_el.get("type") if model_el is not None else None
            if _is_virtio_model(model):
                found.append((el, model or "virtio"))
        elif tag in ("memballoon", "rng"):
            if _is_virtio_model(el.get("model")):
                found.append((el, el.get("model") or "virtio"))
        elif (tag == "input" and el.get("bus") == "virtio") or tag == "vsock":
            found.append((el, el.get("model") or "virtio"))
        elif tag == "video":
            model_el = el.find("model")
            if model_el is not None and model_el.get("type") == "virtio":
                found.append((el, "virtio"))
        elif tag == "filesystem":
            driver = el.find("driver")
            if driver is None or driver.get("type") in (None, "path", "virtiofs"):
                found.append((el, el.get("model") or "virtio"))
    return found


def _has_iommu(el: ET.Element) -> bool:
    return any(d.get("iommu") == "on" for d in el.findall("driver"))


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 16 if text.strip().lower().startswith("0x") else 10)
    except ValueError:
        return None


_LS_CHILDREN = {
    "sev": {"cbitpos", "reducedPhysBits", "policy", "handle", "dhCert", "session"},
    "sev-snp": {
        "cbitpos",
        "reducedPhysBits",
        "policy",
        "guestVisibleWorkarounds",
        "idBlock",
        "idAuth",
        "hostData",
    },
}
_LS_ATTRS = {"sev": {"type", "kernelHashes"}, "sev-snp": {"type", "kernelHashes", "authorKey", "vcek"}}
_SNP_BLOBS = {"guestVisibleWorkarounds": 16, "idBlock": 96, "idAuth": 4096, "hostData": 32}


def _launch_security_shape(ls: ET.Element, ls_type: str, path: Callable[[ET.Element], str]) -> list[Finding]:
    out: list[Finding] = []
    fix = "see libvirt's formatdomain 'Launch Security' section for the elements of this type"
    for attr in sorted(set(ls.attrib) - _LS_ATTRS[ls_type]):
        out.append(
            _finding("launch-security", path(ls), f"unknown attribute {attr!r} for type {ls_type!r}", fix)
        )
    for attr in sorted(set(ls.attrib) & {"kernelHashes", "authorKey", "vcek"}):
        if ls.get(attr) not in ("yes", "no"):
            out.append(_finding("launch-security", path(ls), f"{attr} must be 'yes' or 'no'", fix))
    seen: set[str] = set()
    for child in ls:
        if not isinstance(child.tag, str):
            continue
        if child.tag not in _LS_CHILDREN[ls_type]:
            out.append(
                _finding(
                    "launch-security", path(child), f"<{child.tag}> is not defined for type {ls_type!r}", fix
                )
            )
            continue
        if child.tag in seen:
            out.append(_finding("launch-security", path(child), f"<{child.tag}> appears twice", fix))
        seen.add(child.tag)
        text = (child.text or "").strip()
        if child.tag in ("cbitpos", "reducedPhysBits", "handle") and not text.isdigit():
            out.append(
                _finding(
                    "launch-security",
                    path(child),
                    f"<{child.tag}> must be a decimal number, not {text!r}",
                    fix,
                )
            )
        if ls_type == "sev-snp" and child.tag in _SNP_BLOBS:
            try:
                check_blob(text, _SNP_BLOBS[child.tag], child.tag)
            except FormatError as err:
                out.append(_finding("launch-security", path(child), str(err), fix))
    return out


def lint_domain(text: str | bytes) -> list[Finding]:
    """Every finding for a domain XML document (FormatError when it is not a domain XML)."""
    root = parse_domain(text)
    paths = _paths(root)

    def path(el: ET.Element) -> str:
        return paths[id(el)]

    out: list[Finding] = []
    ls = root.find("launchSecurity")
    ls_type = ls.get("type") if ls is not None else None
    if ls is None or ls_type not in ("sev", "sev-snp"):
        out.append(
            _finding(
                "not-sev",
                path(ls) if ls is not None else "/domain",
                "the domain has no SEV launch security" + (f" (type {ls_type!r})" if ls_type else ""),
                "add <launchSecurity type='sev'> with cbitpos, reducedPhysBits and policy "
                "(or generate the domain with 'sevbox libvirt xml')",
            )
        )
    snp = ls_type == "sev-snp"
    sev_policy: SevPolicy | None = None
    snp_policy: SnpPolicy | None = None
    attested = False
    if ls is not None and ls_type in ("sev", "sev-snp"):
        out += _launch_security_shape(ls, ls_type, path)
        policy_el = ls.find("policy")
        value = _parse_int(policy_el.text if policy_el is not None else None)
        where = path(policy_el) if policy_el is not None else path(ls)
        if value is None:
            out.append(
                _finding(
                    "policy-invalid",
                    where,
                    "no readable <policy> (a hex number such as 0x0003)",
                    "set <policy> to the guest policy in hex, e.g. 0x0003 (SEV), 0x0007 (SEV-ES), "
                    "0x30000 (SNP)",
                )
            )
        else:
            try:
                if snp:
                    snp_policy = SnpPolicy.decode(value)
                else:
                    sev_policy = SevPolicy.decode(value)
                    if sev_policy.reserved:
                        raise FormatError("reserved bits 15:6 are set", what="SEV policy")
            except FormatError as err:
                out.append(
                    _finding(
                        "policy-invalid",
                        where,
                        f"policy {value:#x}: {err}",
                        "use a valid policy ('sevbox attest policy' explains and encodes one)",
                    )
                )
            else:
                if (sev_policy is not None and sev_policy.allows_debug) or (
                    snp_policy is not None and snp_policy.allows_debug
                ):
                    out.append(
                        _finding(
                            "policy-debug",
                            where,
                            f"policy {value:#x} allows the host to debug (decrypt) the guest",
                            "set NODBG (bit 0) in an SEV policy; clear DEBUG (bit 19) in an SNP policy",
                        )
                    )
        if not snp:
            dh = ls.find("dhCert")
            session = ls.find("session")
            attested = dh is not None or session is not None
            if (dh is None) != (session is None):
                out.append(
                    _finding(
                        "attest-incomplete",
                        path(ls),
                        "an attested launch needs both <dhCert> and <session>",
                        "give both (from 'sevbox attest session' or 'sevctl session'), or neither",
                    )
                )
            for el, size, what in ((dh, DH_CERT_SIZE, "dhCert"), (session, SESSION_SIZE, "session")):
                if el is None:
                    continue
                try:
                    check_blob(el.text or "", size, what)
                except FormatError as err:
                    out.append(
                        _finding(
                            "attest-blob",
                            path(el),
                            str(err),
                            f"<{what}> holds the base64 of the {size}-byte blob the guest owner made",
                        )
                    )
    encrypted_state = snp or (sev_policy is not None and sev_policy.es)

    os_el = root.find("os")
    os_path = path(os_el) if os_el is not None else "/domain"
    type_el = os_el.find("type") if os_el is not None else None
    machine = (type_el.get("machine") if type_el is not None else None) or ""
    # libvirt's default x86 machine ("pc") is i440fx
    i440fx = machine in ("", "pc") or (machine.startswith("pc-") and "q35" not in machine)
    loader = os_el.find("loader") if os_el is not None else None
    efi = os_el is not None and os_el.get("firmware") == "efi"
    if loader is None and not efi:
        out.append(
            _finding(
                "firmware-seabios",
                os_path,
                "no UEFI loader: libvirt boots SeaBIOS, and SEV works only with OVMF",
                "add <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader> "
                "(or <os firmware='efi'>)",
            )
        )
    elif loader is not None and re.search(r"seabios|bios[-.]?\d*\.bin", (loader.text or "").lower()):
        out.append(
            _finding(
                "firmware-seabios",
                path(loader),
                f"the loader {loader.text!r} is SeaBIOS; SEV works only with OVMF",
                "point <loader> at an OVMF build, e.g. /usr/share/OVMF/OVMF_CODE_4M.fd",
            )
        )
    if i440fx:
        out.append(
            _finding(
                "machine-i440fx",
                path(type_el) if type_el is not None else os_path,
                f"machine {machine!r} is the legacy PC type, discouraged for SEV",
                "use machine='q35'",
            )
        )
    nvram = os_el.find("nvram") if os_el is not None else None
    kernel_hashes = ls is not None and ls.get("kernelHashes") == "yes"
    if nvram is not None and (attested or snp or kernel_hashes):
        out.append(
            _finding(
                "nvram-attested",
                path(nvram),
                "an NVRAM variable store with an "
                + ("SNP launch" if snp else "attested launch" if attested else "measured kernel boot")
                + ": the firmware would read state the measurement does not cover",
                "remove <nvram> and make the loader stateless (stateless='yes')",
            )
        )
    elif (
        nvram is None
        and (attested or snp or kernel_hashes)
        and loader is not None
        and loader.get("type") == "pflash"
        and loader.get("readonly") == "yes"
        and loader.get("stateless") != "yes"
    ):
        # libvirt gives a read-only pflash loader a per-domain variable store unless it is stateless
        out.append(
            _finding(
                "nvram-attested",
                path(loader),
                "a read-only pflash loader that is not stateless: libvirt will create an NVRAM "
                "variable store for this measured launch, state the measurement does not cover",
                "add stateless='yes' to <loader>",
            )
        )

    kernel = os_el.find("kernel") if os_el is not None else None
    if ls is not None and ls_type in ("sev", "sev-snp"):
        hashed = ls.get("kernelHashes") == "yes"
        if kernel is not None and not hashed:
            out.append(
                _finding(
                    "kernel-hashes",
                    path(kernel),
                    "direct kernel boot without kernelHashes='yes': the launch measurement covers the "
                    "firmware only, not the kernel, initrd and command line",
                    "set <launchSecurity ... kernelHashes='yes'> (the firmware needs the SEV hashes "
                    "table, e.g. edk2's AmdSev build)",
                )
            )
        elif hashed and kernel is None:
            out.append(
                _finding(
                    "kernel-hashes",
                    path(ls),
                    "kernelHashes='yes' but no <kernel>: there is nothing to hash",
                    "add <kernel> (and <initrd>, <cmdline>) to <os>, or drop kernelHashes",
                )
            )

    features = root.find("features")
    smm = features.find("smm") if features is not None else None
    if encrypted_state and smm is not None and smm.get("state", "on") == "on":
        out.append(
            _finding(
                "smm-encrypted-state",
                path(smm),
                "SMM is on, which QEMU does not support with SEV-ES/SNP encrypted register state",
                "set <smm state='off'/> and use an OVMF build without SMM (not a secure-boot build)",
            )
        )

    hard = root.find("memtune/hard_limit")
    locked = root.find("memoryBacking/locked")
    if hard is None and locked is None:
        out.append(
            _finding(
                "memory-not-pinned",
                "/domain",
                "SEV pins guest memory, but there is neither <memoryBacking><locked/> nor a hard limit",
                "add <memtune><hard_limit unit='KiB'>RAM+262144</hard_limit></memtune>, or "
                "<memoryBacking><locked/></memoryBacking> and cap machine.slice",
            )
        )
    elif hard is not None and locked is None:
        memory = _kib(root.find("currentMemory")) or _kib(root.find("memory"))
        limit = _kib(hard)
        if memory is not None and limit is not None and limit < memory + HARD_LIMIT_EXTRA_KIB:
            need = memory + HARD_LIMIT_EXTRA_KIB
            out.append(
                _finding(
                    "hard-limit-low",
                    path(hard),
                    f"hard limit {limit} KiB is below guest RAM + 256 MiB ({need} KiB)",
                    f"raise <hard_limit> to at least {need} KiB",
                )
            )

    devices = root.find("devices")
    if devices is not None:
        for el, model in _virtio_devices(devices):
            if not _has_iommu(el):
                out.append(
                    _finding(
                        "virtio-iommu",
                        path(el),
                        f"virtio device <{el.tag}> without <driver iommu='on'/>: its DMA cannot reach "
                        "encrypted memory",
                        f"add <driver iommu='on'/> inside <{el.tag}>",
                    )
                )
            if i440fx and model in ("virtio", "virtio-transitional"):
                out.append(
                    _finding(
                        "virtio-transitional",
                        path(el),
                        f"<{el.tag}> uses model {model!r} on i440fx; SEV needs virtio 1.0 devices",
                        "use model 'virtio-non-transitional' (or machine q35)",
                    )
                )
        for nic in devices.findall("interface"):
            model_el = nic.find("model")
            if model_el is None or not _is_virtio_model(model_el.get("type")):
                continue
            rom = nic.find("rom")
            if rom is None or (rom.get("enabled", "yes") != "no" and rom.get("bar", "on") != "off"):
                out.append(
                    _finding(
                        "virtio-net-rom",
                        path(rom) if rom is not None else path(nic),
                        "the NIC's option ROM (iPXE) is enabled; it does not work under SEV",
                        "add <rom enabled='no'/> inside <interface>",
                    )
                )
        for disk in devices.findall("disk"):
            target = disk.find("target")
            if target is not None and target.get("bus") == "virtio" and disk.get("device", "disk") == "disk":
                out.append(
                    _finding(
                        "virtio-blk-boot",
                        path(target),
                        "virtio-blk disk: older guest kernels cannot boot from it under SEV, and its "
                        "queues can exhaust swiotlb",
                        "put the disk on virtio-scsi: <target dev='sda' bus='scsi'/> and a "
                        "<controller type='scsi' model='virtio-scsi'> with <driver iommu='on'/>",
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------
# libvirt's schema (effects: runs virt-xml-validate)
# ---------------------------------------------------------------------------------------------

SCHEMA_DIRS = (Path("/usr/share/libvirt/schemas"),)


@dataclass(frozen=True, slots=True)
class SchemaResult:
    checked: bool  # False: virt-xml-validate is not installed
    ok: bool
    output: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "output": self.output, "note": self.note}


def schema_knows_snp(schema_dirs: tuple[Path, ...] = SCHEMA_DIRS) -> bool:
    """Does the installed libvirt schema accept <launchSecurity type='sev-snp'> (libvirt >= 10.5)?"""
    for d in schema_dirs:
        try:
            if "sev-snp" in (d / "domaincommon.rng").read_text():
                return True
        except OSError:
            continue
    return False


def _without_launch_security(text: str | bytes) -> bytes:
    root = parse_domain(text)
    for el in root.findall("launchSecurity"):
        root.remove(el)
    return ET.tostring(root)


def schema_check(
    text: str | bytes, *, validator: str | None = None, schema_dirs: tuple[Path, ...] = SCHEMA_DIRS
) -> SchemaResult:
    """Run ``virt-xml-validate FILE domain`` on the document (written to a temporary file).

    libvirt's schema gained ``sev-snp`` in 10.5.0; with an older schema an SNP document is checked
    without its <launchSecurity> element (the lint rules above check that element) and the result
    says so in ``note``.
    """
    program = validator or shutil.which("virt-xml-validate")
    if program is None:
        return SchemaResult(False, True, note="virt-xml-validate is not installed; schema not checked")
    root = parse_domain(text)
    ls = root.find("launchSecurity")
    note = ""
    data = text.encode() if isinstance(text, str) else text
    if ls is not None and ls.get("type") == "sev-snp" and not schema_knows_snp(schema_dirs):
        data = _without_launch_security(text)
        note = (
            "the installed libvirt schema predates sev-snp (libvirt 10.5.0); the document was "
            "validated without <launchSecurity>, which sevbox's own rules checked"
        )
    fd, tmp = tempfile.mkstemp(prefix="sevbox-domain-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            proc = subprocess.run(
                [program, tmp, "domain"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return SchemaResult(False, True, note=f"could not run {program}: {err}")
    finally:
        os.unlink(tmp)
    output = (proc.stdout + proc.stderr).replace(tmp, "<document>").strip()
    return SchemaResult(True, proc.returncode == 0, output, note)


def schema_finding(result: SchemaResult) -> Finding | None:
    if not result.checked or result.ok:
        return None
    first = next((line for line in result.output.splitlines() if "error" in line.lower()), result.output)
    return _finding(
        "schema",
        "/domain",
        f"libvirt's schema rejects the document: {first.strip()[:300]}",
        "fix the element virt-xml-validate names (run 'virt-xml-validate FILE domain' for all of it)",
    )
