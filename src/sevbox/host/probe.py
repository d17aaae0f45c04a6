"""Is this host ready to run VMs, and SEV, SEV-ES and SEV-SNP guests? Item by item, with the fix.

Two halves:

* **gathering** (:func:`gather`) reads /proc, /sys and /dev under a ``sysroot`` and asks QEMU and
  libvirt. With ``sysroot`` other than "/", nothing is run and no device is opened: program output
  is read from ``<sysroot>/sevbox-capture/`` instead (see :data:`CAPTURE_FILES`), so a host can be
  diagnosed from a copy and tests can describe SEV, SEV-ES and SNP hosts with real file contents.
* **judging** (:func:`evaluate`) is pure: :class:`HostFacts` in, :class:`Report` out.

Check ids (the JSON contract of ``sevbox check --json``): cpu.sev, cpu.sev-es, cpu.sev-snp,
kernel.mem_encrypt, kvm.sev, kvm.sev-es, kvm.sev-snp, dev.sev, kvm.usable, qemu.version,
qemu.sev-guest, qemu.sev-snp-guest, firmware.ovmf, libvirt.sev, guest.swiotlb.

``ok`` means "verified good". Which checks each mode needs is :data:`REQUIRED`; kernel.mem_encrypt
(host SME) and libvirt.sev are reported but needed by no mode.

Sources: CPUID Fn8000_001F (AMD APM vol. 3, appendix E.4.17; Linux cpufeatures.h word 19), read as
16 bytes at offset ``leaf | subleaf << 32`` of ``/dev/cpu/0/cpuid``; Linux clears the cpuinfo flags
sev/sev_es/sev_snp when the BIOS has not enabled them, so CPUID and cpuinfo together tell "the CPU
can" from "the CPU may".
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sevbox.errors import FormatError, HostError
from sevbox.host import kmsg
from sevbox.host.sevdev import PlatformStatus, SevDevice, SnpPlatformStatus

__all__ = [
    "CAPTURE_DIR",
    "CAPTURE_FILES",
    "CHECK_IDS",
    "MODES",
    "REQUIRED",
    "Check",
    "CpuFacts",
    "FirmwareFacts",
    "HostFacts",
    "LibvirtFacts",
    "QemuFacts",
    "Report",
    "SevCpuid",
    "decode_cpuid_8000001f",
    "evaluate",
    "gather",
    "parse_cmdline",
    "parse_cpuinfo",
    "parse_domcapabilities",
    "probe",
    "read_cpuid",
    "sev_params",
]

MODES = ("vm", "sev", "sev-es", "sev-snp")
CHECK_IDS = (
    "cpu.sev",
    "cpu.sev-es",
    "cpu.sev-snp",
    "kernel.mem_encrypt",
    "kvm.sev",
    "kvm.sev-es",
    "kvm.sev-snp",
    "dev.sev",
    "kvm.usable",
    "qemu.version",
    "qemu.sev-guest",
    "qemu.sev-snp-guest",
    "firmware.ovmf",
    "libvirt.sev",
    "guest.swiotlb",
)
# In the order "why" looks for the first failure: the most basic cause first.
_VM = ("qemu.version",)  # plain VMs run under TCG when KVM can't run them
_SEV = (
    "cpu.sev",
    *_VM,
    "kvm.usable",
    "kvm.sev",
    "dev.sev",
    "qemu.sev-guest",
    "firmware.ovmf",
    "guest.swiotlb",
)
REQUIRED: dict[str, tuple[str, ...]] = {
    "vm": _VM,
    "sev": _SEV,
    "sev-es": ("cpu.sev-es", *_SEV, "kvm.sev-es"),
    "sev-snp": ("cpu.sev-snp", *_VM, "kvm.usable", "kvm.sev-snp", "dev.sev", "qemu.sev-snp-guest",
                "firmware.ovmf", "guest.swiotlb"),
}  # fmt: skip

CAPTURE_DIR = "sevbox-capture"
CAPTURE_FILES = {
    "qemu-version.txt": "qemu-system-x86_64 --version",
    "qemu-object-help.txt": "qemu-system-x86_64 -object help",
    "qemu-sev-guest-help.txt": "qemu-system-x86_64 -object sev-guest,help",
    "query-sev-capabilities.json": "QMP reply to query-sev-capabilities ({'return': ...} or {'error': ...})",
    "virsh-domcapabilities.xml": "virsh domcapabilities (absent: libvirt not installed)",
    "sev-platform-status.json": "PLATFORM_STATUS: api_major, api_minor, state, flags, build, guest_count",
    "kvm.json": "KVM_GET_API_VERSION and the runtime's cached KVM boot probe: api_version, boots_linux, note",
    "cpuid.json": "CPUID leaves 0, 0x80000000, 0x8000001F (used when there is no dev/cpu/0/cpuid)",
}
QEMU = "qemu-system-x86_64"
FIRMWARE_DIRS = ("usr/share/OVMF", "usr/share/ovmf", "usr/share/qemu", "usr/share/edk2/ovmf")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO=0xAE, 0x00)
KVM_API_VERSION = 12
_TIMEOUT = 15.0


# ----------------------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class SevCpuid:
    """CPUID Fn8000_001F: EAX feature bits, EBX C-bit/phys-bit reduction/VMPLs, ECX ASIDs, EDX min ASID."""

    eax: int
    ebx: int
    ecx: int
    edx: int

    # EAX bit -> name (APM vol. 3 E.4.17 / Linux cpufeatures.h)
    NAMES: ClassVar[dict[int, str]] = {
        0: "SME",
        1: "SEV",
        2: "VmPageFlush",
        3: "SEV-ES",
        4: "SEV-SNP",
        5: "VMPL",
        6: "RMPQUERY",
        7: "VmplSSS",
        8: "SecureTSC",
        9: "TscAuxVirtualization",
        10: "HwEnforcedCacheCoherency",
        11: "64BitHost",
        12: "RestrictedInjection",
        13: "AlternateInjection",
        14: "DebugSwap",
        15: "PreventHostIbs",
        16: "VTE",
        17: "VmgexitParameter",
        18: "VirtualTomMsr",
        19: "IbsVirtGuestCtl",
        21: "RMPREAD",
        23: "SegmentedRMP",
        24: "VmsaRegProt",
        25: "SmtProtection",
        28: "SvsmCommPageMsr",
        29: "NestedVirtSnpMsr",
        30: "HvInUseWrAllowed",
    }

    def bit(self, n: int) -> bool:
        return bool(self.eax >> n & 1)

    @property
    def sme(self) -> bool:
        return self.bit(0)

    @property
    def sev(self) -> bool:
        return self.bit(1)

    @property
    def sev_es(self) -> bool:
        return self.bit(3)

    @property
    def snp(self) -> bool:
        return self.bit(4)

    @property
    def cbitpos(self) -> int:
        return self.ebx & 0x3F

    @property
    def reduced_phys_bits(self) -> int:
        return self.ebx >> 6 & 0x3F

    @property
    def num_vmpls(self) -> int:
        return self.ebx >> 12 & 0xF

    @property
    def max_guests(self) -> int:
        """Number of encrypted guests supported at once (= highest ASID usable for SEV)."""
        return self.ecx

    @property
    def min_sev_asid(self) -> int:
        """Lowest ASID for an SEV guest without ES; ASIDs below it are for SEV-ES/SNP."""
        return self.edx

    @property
    def es_asids(self) -> int:
        return max(0, min(self.min_sev_asid, self.max_guests + 1) - 1)

    @property
    def sev_asids(self) -> int:
        return max(0, self.max_guests - max(self.min_sev_asid, 1) + 1)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(name for b, name in sorted(self.NAMES.items()) if self.bit(b))

    def describe(self) -> str:
        return (
            f"CPUID 0x8000001F: {' '.join(self.features) or 'no memory-encryption features'};"
            f" C-bit {self.cbitpos}, reduced phys bits {self.reduced_phys_bits},"
            f" {self.max_guests} encrypted guests, min SEV (non-ES) ASID {self.min_sev_asid}"
        )


def decode_cpuid_8000001f(eax: int, ebx: int, ecx: int, edx: int) -> SevCpuid:
    for v in (eax, ebx, ecx, edx):
        if not 0 <= v < 1 << 32:
            raise ValueError(f"a CPUID register is 32 bits, got {v:#x}")
    return SevCpuid(eax, ebx, ecx, edx)


def read_cpuid(path: Path, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """EAX, EBX, ECX, EDX of ``leaf`` through the Linux cpuid driver (``/dev/cpu/N/cpuid``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, 16, leaf | subleaf << 32)
    finally:
        os.close(fd)
    if len(data) != 16:
        raise OSError(f"short read of CPUID leaf {leaf:#x} from {path}")
    return (
        int.from_bytes(data[0:4], "little"),
        int.from_bytes(data[4:8], "little"),
        int.from_bytes(data[8:12], "little"),
        int.from_bytes(data[12:16], "little"),
    )


@dataclass(frozen=True)
class CpuFacts:
    vendor: str | None  # "AuthenticAMD", "GenuineIntel", ...
    model: str | None
    flags: frozenset[str] | None  # None: /proc/cpuinfo unreadable
    cpuid: SevCpuid | None  # None: /dev/cpu/0/cpuid unreadable
    cpuid_note: str  # how CPUID was (or wasn't) read

    @property
    def amd(self) -> bool:
        return self.vendor == "AuthenticAMD"

    def can(self, feature: str) -> bool | None:
        """Whether the CPU has ``feature`` (sev, sev_es, sev_snp), by CPUID; None when unknown."""
        if self.cpuid is None:
            return None
        return {"sev": self.cpuid.sev, "sev_es": self.cpuid.sev_es, "sev_snp": self.cpuid.snp}[feature]

    def enabled(self, feature: str) -> bool:
        """The kernel shows ``feature`` in /proc/cpuinfo (it hides what the BIOS left off)."""
        return self.flags is not None and feature in self.flags

    @property
    def strongest_offered(self) -> str:
        """The strongest mode the CPU itself offers (CPUID when readable, else cpuinfo flags)."""
        for mode, feat in (("sev-snp", "sev_snp"), ("sev-es", "sev_es"), ("sev", "sev")):
            can = self.can(feat)
            if can or (can is None and self.enabled(feat)):
                return mode
        return "vm"


def parse_cpuinfo(text: str) -> tuple[str | None, str | None, frozenset[str] | None]:
    """(vendor_id, model name, flags) of the first processor in /proc/cpuinfo."""
    vendor = model = None
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if (vendor or flags is not None) and not line.strip():
                break  # end of the first processor's block
            continue
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "model name" and model is None:
            model = value
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return vendor, model, flags


CPUID_LEAVES = (0, 0x8000_0000, 0x8000_001F)


def _load_cpuid_json(text: str) -> dict[int, tuple[int, int, int, int]]:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    out = {}
    for leaf, regs in raw.items():
        vals = tuple(int(v, 16) if isinstance(v, str) else int(v) for v in regs)
        if len(vals) != 4:
            raise ValueError(f"leaf {leaf} needs 4 registers")
        out[int(leaf, 16)] = (vals[0], vals[1], vals[2], vals[3])
    return out


def _cpuid_reader(sysroot: Path) -> tuple[Callable[[int], tuple[int, int, int, int]] | None, str]:
    """How to read a CPUID leaf under ``sysroot``: the cpuid driver, else a captured cpuid.json."""
    path = sysroot / "dev/cpu/0/cpuid"
    if path.exists():
        return (lambda leaf: read_cpuid(path, leaf)), str(path)
    cap = sysroot / CAPTURE_DIR / "cpuid.json"
    if sysroot.resolve() != Path("/") and cap.exists():
        try:
            table = _load_cpuid_json(cap.read_text())
        except (OSError, ValueError, TypeError, AttributeError) as err:
            return None, f"{cap} unreadable ({err}): using /proc/cpuinfo flags"

        def from_table(leaf: int) -> tuple[int, int, int, int]:
            if leaf not in table:
                raise OSError(f"leaf {leaf:#x} not captured")
            return table[leaf]

        return from_table, str(cap)
    return None, f"{path} absent (cpuid driver not loaded): using /proc/cpuinfo flags"


def _cpu_facts(sysroot: Path) -> CpuFacts:
    try:
        vendor, model, flags = parse_cpuinfo((sysroot / "proc/cpuinfo").read_text())
    except OSError:
        vendor, model, flags = None, None, None
    reader, where = _cpuid_reader(sysroot)
    if reader is None:
        return CpuFacts(vendor, model, flags, None, where)
    try:
        _, b, c, d = reader(0)
        regs = b.to_bytes(4, "little") + d.to_bytes(4, "little") + c.to_bytes(4, "little")
        vendor = vendor or regs.decode("ascii", "replace")
        max_ext = reader(0x8000_0000)[0]
        if max_ext < 0x8000_001F:
            cpuid = SevCpuid(0, 0, 0, 0)
            note = f"{where}: highest extended leaf {max_ext:#x}, no leaf 0x8000001F"
        else:
            cpuid = decode_cpuid_8000001f(*reader(0x8000_001F))
            note = f"read from {where}"
    except (OSError, ValueError) as err:
        cpuid, note = (
            None,
            f"{where} unreadable ({getattr(err, 'strerror', None) or err}): using /proc/cpuinfo flags",
        )
    return CpuFacts(vendor, model, flags, cpuid, note)


# ------------------------------------------------------------------------------------- kernel


def parse_cmdline(text: str) -> dict[str, str]:
    """Kernel parameters as a dict; '-' and '_' in names are the same to the kernel (taken as '_')."""
    out: dict[str, str] = {}
    for tok in text.split():
        if tok == "--":
            break
        name, _, value = tok.partition("=")
        out[name.replace("-", "_")] = value
    return out


def _truthy(raw: str) -> bool | None:
    v = raw.strip().lower()
    if v in ("y", "1", "on", "yes", "true"):
        return True
    if v in ("n", "0", "off", "no", "false"):
        return False
    return None


# ---------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceFacts:
    present: bool
    opened: bool | None  # None: not tried (captured tree)
    error: str = ""
    status: PlatformStatus | None = None
    snp_status: SnpPlatformStatus | None = None
    status_error: str = ""
    kvm_api: int | None = None
    boots_linux: bool | None = None  # the runtime's KVM probe, cached for this boot; None: not run
    boots_note: str = ""


def _cached_accel(sysroot: Path) -> tuple[bool | None, str]:
    """What the runtime's KVM probe (sevbox.qemu.accel) found in this boot, from its cache file.

    Read-only: running the probe boots a guest (seconds), which ``sevbox check`` does not do.
    """
    from sevbox.pins import data_dir

    try:
        boot = (sysroot / "proc/sys/kernel/random/boot_id").read_text().strip()
        saved = json.loads((data_dir() / "accel.json").read_text())
    except (OSError, ValueError):
        return None, ""
    if not isinstance(saved, dict) or not boot or saved.get("boot_id") != boot:
        return None, ""
    name = saved.get("name")
    if name not in ("kvm", "tcg"):
        return None, ""
    return name == "kvm", str(saved.get("reason", ""))


def _dev_sev(sysroot: Path, live: bool, want_snp: bool) -> DeviceFacts:
    path = sysroot / "dev/sev"
    if not path.exists():
        return DeviceFacts(False, None)
    if not live:
        status = None
        cap = sysroot / CAPTURE_DIR / "sev-platform-status.json"
        err = ""
        if cap.exists():
            try:
                d = json.loads(cap.read_text())
                status = PlatformStatus(
                    int(d["api_major"]),
                    int(d["api_minor"]),
                    int(d["state"]),
                    int(d["flags"]),
                    int(d["build"]),
                    int(d["guest_count"]),
                )
            except (ValueError, KeyError, TypeError, OSError) as e:
                err = f"captured platform status unreadable: {e}"
        return DeviceFacts(True, None, status=status, status_error=err)
    try:
        dev = SevDevice(path)
    except HostError as err:
        return DeviceFacts(True, False, str(err))
    with dev:
        try:
            status = dev.platform_status()
        except (HostError, FormatError) as err:
            return DeviceFacts(True, True, status_error=str(err))
        snp = None
        snp_err = ""
        if want_snp:
            try:
                snp = dev.snp_platform_status()
            except (HostError, FormatError) as err:
                snp_err = str(err)
        return DeviceFacts(True, True, status=status, snp_status=snp, status_error=snp_err)


def _dev_kvm(sysroot: Path, live: bool) -> DeviceFacts:
    path = sysroot / "dev/kvm"
    if not path.exists():
        return DeviceFacts(False, None)
    if not live:
        try:
            d = json.loads((sysroot / CAPTURE_DIR / "kvm.json").read_text())
            api, boots = d.get("api_version"), d.get("boots_linux")
            return DeviceFacts(
                True,
                True if isinstance(api, int) else None,
                kvm_api=api if isinstance(api, int) else None,
                boots_linux=boots if isinstance(boots, bool) else None,
                boots_note=str(d.get("note", "")),
            )
        except (OSError, ValueError, AttributeError):
            return DeviceFacts(True, None)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return DeviceFacts(True, False, f"cannot open {path}: {err.strerror}")
    try:
        api = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as err:
        return DeviceFacts(True, True, f"KVM_GET_API_VERSION failed: {err.strerror}")
    finally:
        os.close(fd)
    boots, note = _cached_accel(sysroot)
    return DeviceFacts(True, True, kvm_api=int(api), boots_linux=boots, boots_note=note)


# ------------------------------------------------------------------------------------- QEMU


@dataclass(frozen=True)
class QemuFacts:
    source: str  # "live", "captured" or "none" (not found / not captured)
    path: str = ""
    version: tuple[int, int, int] | None = None
    version_text: str = ""
    objects: frozenset[str] = frozenset()
    kernel_hashes: bool | None = None  # sev-guest has the kernel-hashes property
    caps: Mapping[str, Any] | None = None  # query-sev-capabilities' return
    caps_error: str = ""


def _parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _parse_objects(text: str) -> frozenset[str]:
    return frozenset(ln.strip() for ln in text.splitlines() if ln.startswith("  ") and ln.strip())


def _qmp_reply(reply: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str]:
    if isinstance(reply.get("return"), dict):
        return reply["return"], ""
    err = reply.get("error")
    if isinstance(err, dict):
        return None, str(err.get("desc", err))
    return None, "unexpected QMP reply"


def _run(argv: list[str], timeout: float = _TIMEOUT) -> tuple[int, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, f"{argv[0]} did not answer within {timeout:.0f} s"
    except OSError as err:
        return -1, f"cannot run {argv[0]}: {err.strerror}"
    return r.returncode, (r.stdout + r.stderr if r.returncode else r.stdout)


async def _query_caps(sock: socket.socket) -> Mapping[str, Any]:
    from qemu.qmp import QMPClient

    qmp = QMPClient("sevbox-check")
    await qmp.connect(sock)
    try:
        result = await qmp.execute("query-sev-capabilities")
    finally:
        try:
            await qmp.execute("quit")
        except Exception:  # QEMU may hang up before answering quit
            pass
        try:
            await qmp.disconnect()
        except Exception:  # disconnect re-raises the reader's EOF after quit: expected
            pass
    if not isinstance(result, dict):
        raise HostError("query-sev-capabilities returned no object")
    return result


def _live_caps(qemu: str) -> tuple[Mapping[str, Any] | None, str]:
    """Start QEMU with no machine under KVM, ask query-sev-capabilities over a socketpair QMP."""
    from qemu.qmp import ExecuteError, QMPError

    ours, theirs = socket.socketpair()
    argv = [
        qemu,
        "-machine",
        "none,accel=kvm",
        "-nodefaults",
        "-display",
        "none",
        "-S",
        "-chardev",
        f"socket,id=qmp,fd={theirs.fileno()}",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    try:
        proc = subprocess.Popen(
            argv,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as err:
        ours.close()
        theirs.close()
        return None, f"cannot start {qemu}: {err.strerror}"
    theirs.close()
    caps: Mapping[str, Any] | None = None
    error = ""
    try:
        caps = asyncio.run(asyncio.wait_for(_query_caps(ours), _TIMEOUT))
    except ExecuteError as err:
        error = str(err)
    except (QMPError, HostError, OSError, TimeoutError, EOFError) as err:
        error = f"QMP failed: {type(err).__name__}: {err}"
    finally:
        ours.close()
        try:
            _, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    if caps is None and not error.startswith("SEV") and stderr.strip():
        error = stderr.strip().splitlines()[-1]  # QEMU's own reason (e.g. no KVM) beats a QMP hang-up
    return caps, error


def _qemu_facts(sysroot: Path, live: bool, kvm_present: bool, run_qemu: bool) -> QemuFacts:
    if not live:
        cap = sysroot / CAPTURE_DIR

        def read(name: str) -> str | None:
            try:
                return (cap / name).read_text()
            except OSError:
                return None

        vtext = read("qemu-version.txt")
        if vtext is None:
            return QemuFacts("none", caps_error="no captured QEMU output in the tree")
        objs = read("qemu-object-help.txt") or ""
        sev_help = read("qemu-sev-guest-help.txt")
        caps, caps_err = None, "query-sev-capabilities was not captured"
        raw = read("query-sev-capabilities.json")
        if raw is not None:
            try:
                caps, caps_err = _qmp_reply(json.loads(raw))
            except (ValueError, AttributeError) as err:
                caps_err = f"captured query-sev-capabilities.json is not JSON: {err}"
        return QemuFacts(
            "captured",
            QEMU,
            _parse_version(vtext),
            vtext.strip().splitlines()[0] if vtext.strip() else "",
            _parse_objects(objs),
            None if sev_help is None else "kernel-hashes" in sev_help,
            caps,
            caps_err,
        )
    path = shutil.which(QEMU)
    if path is None:
        return QemuFacts("none", caps_error=f"{QEMU} not found on PATH")
    rc, vtext = _run([path, "--version"])
    if rc != 0:
        return QemuFacts("none", path, caps_error=vtext.strip())
    _, objs = _run([path, "-object", "help"])
    objects = _parse_objects(objs)
    kh = None
    if "sev-guest" in objects:
        rc, sev_help = _run([path, "-object", "sev-guest,help"])
        kh = rc == 0 and "kernel-hashes" in sev_help
    caps, caps_err = None, "not asked"
    if run_qemu and ("sev-guest" in objects or "sev-snp-guest" in objects):
        if kvm_present:
            caps, caps_err = _live_caps(path)
        else:
            caps_err = "not asked: /dev/kvm is absent"
    return QemuFacts(
        "live", path, _parse_version(vtext), vtext.strip().splitlines()[0], objects, kh, caps, caps_err
    )


# ---------------------------------------------------------------------------------- firmware


@dataclass(frozen=True)
class FirmwareFacts:
    path: str
    size: int
    error: str = ""
    footer_table: bool = False
    sev_es_reset_block: bool = False
    hashes_table: bool = False
    secret_area: bool = False
    snp_metadata: bool = False

    def good_for(self, mode: str) -> bool:
        """Usable for a measured direct-kernel boot (kernel-hashes=on) in ``mode``."""
        if self.error or not self.hashes_table:
            return False
        if mode == "sev-es":
            return self.sev_es_reset_block
        if mode == "sev-snp":
            return self.snp_metadata
        return mode == "sev"

    def describe(self) -> str:
        if self.error:
            return f"{self.path}: {self.error}"
        if not self.footer_table:
            return f"{self.path}: no OVMF footer table (no SEV support)"
        have = [
            n
            for n, v in (
                ("SEV-ES reset block", self.sev_es_reset_block),
                ("SEV hashes table", self.hashes_table),
                ("secret area", self.secret_area),
                ("SNP metadata", self.snp_metadata),
            )
            if v
        ]
        missing = [
            n for n, v in (("hashes table", self.hashes_table), ("SNP metadata", self.snp_metadata)) if not v
        ]
        return f"{self.path}: {', '.join(have) or 'no SEV entries'}" + (
            f" (no {', no '.join(missing)})" if missing else ""
        )


def _firmware_facts(sysroot: Path, extra: str = "") -> tuple[FirmwareFacts, ...]:
    from sevbox.sev.ovmf import parse_ovmf

    candidates: list[Path] = []
    if extra:
        candidates.append(Path(extra) if sysroot == Path("/") else sysroot / extra.lstrip("/"))
    for d in FIRMWARE_DIRS:
        base = sysroot / d
        if base.is_dir():
            candidates += sorted(
                p for p in base.iterdir() if p.suffix == ".fd" and "VARS" not in p.name.upper()
            )
    seen: set[Path] = set()
    out = []
    for p in candidates:
        real = p.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        shown = "/" + str(p.relative_to(sysroot)) if p.is_relative_to(sysroot) else str(p)
        try:
            data = real.read_bytes()
        except OSError as err:
            out.append(FirmwareFacts(shown, 0, f"unreadable: {err.strerror}"))
            continue
        try:
            o = parse_ovmf(data)
        except FormatError as err:
            out.append(FirmwareFacts(shown, len(data), f"malformed: {err}"))
            continue
        out.append(
            FirmwareFacts(
                shown,
                len(data),
                "",
                o.has_footer_table,
                o.sev_es_reset_eip is not None,
                o.has_sev_hashes_table,
                o.sev_secret_block is not None,
                o.has_snp_metadata,
            )
        )
    return tuple(out)


# ----------------------------------------------------------------------------------- libvirt


@dataclass(frozen=True)
class LibvirtFacts:
    source: str  # "live", "captured" or "none"
    answered: bool = False
    error: str = ""
    sev: bool | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    sectypes: tuple[str, ...] = ()


def parse_domcapabilities(xml: str) -> tuple[bool | None, dict[str, str], tuple[str, ...]]:
    """(<sev supported>, its child elements, launchSecurity sectype values) from domcapabilities."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - local virsh output, not network input
    except ET.ParseError as err:
        raise FormatError(f"domcapabilities is not XML: {err}", what="libvirt domcapabilities") from None
    sev = root.find("./features/sev")
    supported = None if sev is None else sev.get("supported") == "yes"
    details = {} if sev is None else {c.tag: (c.text or "").strip() for c in sev}
    sectypes = tuple(
        (v.text or "").strip() for v in root.findall("./features/launchSecurity/enum[@name='sectype']/value")
    )
    return supported, details, sectypes


def _libvirt_facts(sysroot: Path, live: bool, run_libvirt: bool) -> LibvirtFacts:
    if live:
        virsh = shutil.which("virsh")
        if virsh is None:
            return LibvirtFacts("none", error="libvirt is not installed (virsh not found)")
        if not run_libvirt:
            return LibvirtFacts("live", error="not asked")
        rc, out = _run([virsh, "-c", "qemu:///system", "domcapabilities", "--virttype", "kvm"], 20)
        if rc != 0:
            lines = [ln for ln in out.strip().splitlines() if ln.strip()]
            return LibvirtFacts("live", error=lines[-1] if lines else f"virsh exited {rc}")
        source = "live"
    else:
        try:
            out = (sysroot / CAPTURE_DIR / "virsh-domcapabilities.xml").read_text()
        except OSError:
            return LibvirtFacts("none", error="no captured domcapabilities in the tree")
        source = "captured"
    try:
        sev, details, sectypes = parse_domcapabilities(out)
    except FormatError as err:
        return LibvirtFacts(source, error=str(err))
    return LibvirtFacts(source, True, "", sev, details, sectypes)


# ------------------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class HostFacts:
    sysroot: str
    live: bool
    cpu: CpuFacts
    cmdline: Mapping[str, str]
    kvm_amd_loaded: bool
    kvm_params: Mapping[str, str]  # parameter file name -> content (stripped)
    kernel_lines: tuple[str, ...]
    dev_sev: DeviceFacts
    dev_kvm: DeviceFacts
    qemu: QemuFacts
    firmware: tuple[FirmwareFacts, ...]
    libvirt: LibvirtFacts
    swiotlb_mib: int
    memory_mib: int


def gather(
    sysroot: Path = Path("/"),
    *,
    run_qemu: bool = True,
    run_libvirt: bool = True,
    ovmf: str = "",
    swiotlb_mib: int = 64,
    memory_mib: int = 256,
) -> HostFacts:
    """Collect the facts. ``run_qemu``/``run_libvirt`` False skip the slow program probes (live only)."""
    live = sysroot.resolve() == Path("/")
    cpu = _cpu_facts(sysroot)
    try:
        cmdline = parse_cmdline((sysroot / "proc/cmdline").read_text())
    except OSError:
        cmdline = {}
    mod = sysroot / "sys/module/kvm_amd"
    params = {}
    for name in ("sev", "sev_es", "sev_snp"):
        try:
            params[name] = (mod / "parameters" / name).read_text().strip()
        except OSError:
            pass
    lines, _ = kmsg.kernel_log(sysroot)
    dev_kvm = _dev_kvm(sysroot, live)
    return HostFacts(
        sysroot=str(sysroot),
        live=live,
        cpu=cpu,
        cmdline=cmdline,
        kvm_amd_loaded=mod.is_dir(),
        kvm_params=params,
        kernel_lines=tuple(kmsg.sev_lines(lines)),
        dev_sev=_dev_sev(sysroot, live, want_snp=cpu.enabled("sev_snp")),
        dev_kvm=dev_kvm,
        qemu=_qemu_facts(sysroot, live, dev_kvm.present, run_qemu),
        firmware=_firmware_facts(sysroot, ovmf),
        libvirt=_libvirt_facts(sysroot, live, run_libvirt),
        swiotlb_mib=swiotlb_mib,
        memory_mib=memory_mib,
    )


# ------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Check:
    id: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Report:
    ready: Mapping[str, bool]
    checks: tuple[Check, ...]
    cpu_offers: str  # the strongest mode the CPU offers: vm | sev | sev-es | sev-snp
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None
    blockers: Mapping[str, str] = field(default_factory=dict)  # mode -> reason beyond the checks

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    @property
    def why(self) -> dict[str, str]:
        """For each mode that is not ready, the first failed required check: "id: detail"."""
        out = {}
        for mode in MODES:
            if not self.ready[mode]:
                bad = next((c for c in (self.check(i) for i in REQUIRED[mode]) if not c.ok), None)
                out[mode] = f"{bad.id}: {bad.detail}" if bad else self.blockers.get(mode, "not ready")
        return out

    @property
    def exit_code(self) -> int:
        """0 only when the CPU offers SEV (or more) and the strongest mode it offers is ready."""
        return 0 if self.cpu_offers != "vm" and self.ready[self.cpu_offers] else 1

    def to_json(self) -> dict[str, object]:
        return {"ready": dict(self.ready), "checks": [c.to_json() for c in self.checks]}


_BIOS = (
    "enable it in the BIOS/UEFI setup (SMEE / SEV control; SEV-ES ASID space; SNP and SNP memory coverage)"
)


def _cpu_check(cpu: CpuFacts, mode: str) -> Check:
    feat = {"sev": "sev", "sev-es": "sev_es", "sev-snp": "sev_snp"}[mode]
    label = {"sev": "SEV", "sev-es": "SEV-ES", "sev-snp": "SEV-SNP"}[mode]
    cid = f"cpu.{mode}"
    who = cpu.model or cpu.vendor or "unknown CPU"
    if cpu.flags is None and cpu.cpuid is None:
        return Check(
            cid, False, "neither /proc/cpuinfo nor /dev/cpu/0/cpuid could be read", "run as root on the host"
        )
    if cpu.vendor and not cpu.amd:
        return Check(
            cid,
            False,
            f"{who} ({cpu.vendor}) is not an AMD CPU: it has no {label}",
            f"run on an AMD EPYC host with {label}",
        )
    can, on = cpu.can(feat), cpu.enabled(feat)
    c = cpu.cpuid
    extra = f"; {c.describe()}" if c is not None and c.sev else f"; {cpu.cpuid_note}"
    if can is False:
        return Check(
            cid,
            False,
            f"{who}: CPUID says the CPU has no {label}{extra}",
            f"{label} needs an AMD EPYC CPU that has it (SEV: Naples+, SEV-ES: Rome+, SNP: Milan+)",
        )
    if not on:
        if can:
            return Check(
                cid,
                False,
                f"{who}: the CPU has {label} but the kernel does not show it in /proc/cpuinfo"
                f" (disabled by the BIOS, or the kernel turned it off){extra}",
                _BIOS,
            )
        return Check(
            cid,
            False,
            f"{who}: no '{feat}' flag in /proc/cpuinfo{extra}",
            f"{label} needs an AMD CPU that has it and {_BIOS}",
        )
    if c is not None and c.sev:
        if mode == "sev" and c.sev_asids == 0:
            return Check(
                cid,
                False,
                f"{label} is on but no ASID is left for SEV guests{extra}",
                "lower the BIOS 'Minimum SEV non-ES ASID' setting",
            )
        if mode in ("sev-es", "sev-snp") and c.es_asids == 0:
            return Check(
                cid,
                False,
                f"{label} is on but the BIOS left no ASIDs for SEV-ES/SNP guests"
                f" (min SEV ASID is {c.min_sev_asid}){extra}",
                "raise the BIOS 'Minimum SEV non-ES ASID' above 1",
            )
    return Check(cid, True, f"{who}: {label} available ('{feat}' in /proc/cpuinfo){extra}")


def _kvm_check(facts: HostFacts, mode: str) -> Check:
    param = {"sev": "sev", "sev-es": "sev_es", "sev-snp": "sev_snp"}[mode]
    label = {"sev": "SEV", "sev-es": "SEV-ES", "sev-snp": "SEV-SNP"}[mode]
    cid = f"kvm.{mode}"
    spelled = f"kvm_amd.{param}=1"
    if facts.cpu.vendor and not facts.cpu.amd:
        return Check(cid, False, f"not an AMD CPU: kvm_amd (and its {param} parameter) does not apply", "")
    on_cmdline = facts.cmdline.get(f"kvm_amd.{param}")
    if not facts.kvm_amd_loaded:
        said = (
            f"; the kernel command line sets kvm_amd.{param}={on_cmdline}" if on_cmdline is not None else ""
        )
        return Check(
            cid,
            False,
            f"the kvm_amd module is not loaded{said}",
            f"load it: modprobe kvm_amd {param}=1 (or put {spelled} on the kernel command line)",
        )
    raw = facts.kvm_params.get(param)
    if raw is None:
        return Check(
            cid,
            False,
            f"kvm_amd has no '{param}' parameter: this kernel's KVM cannot run {label} guests",
            f"use a host kernel whose KVM supports {label} (SEV-ES: 5.11+, SNP: 6.11+)",
        )
    val = _truthy(raw)
    where = f"/sys/module/kvm_amd/parameters/{param} is {raw!r}"
    if val:
        return Check(cid, True, f"{label} enabled in KVM ({where})")
    fix = (
        f"put {spelled} on the kernel command line (or 'options kvm_amd {param}=1' in"
        " /etc/modprobe.d/) and reboot"
    )
    if on_cmdline is not None and _truthy(on_cmdline) is False:
        fix = f"remove kvm_amd.{param}={on_cmdline} from the kernel command line; " + fix
    if mode != "sev" and facts.cpu.enabled({"sev-es": "sev_es", "sev-snp": "sev_snp"}[mode]):
        detail = f"{label} disabled in KVM ({where}) although the CPU shows it"
    else:
        detail = f"{label} disabled in KVM ({where})"
    return Check(cid, False, detail, fix)


def _mem_encrypt_check(facts: HostFacts) -> Check:
    cid = "kernel.mem_encrypt"
    value = facts.cmdline.get("mem_encrypt")
    active = [ln for ln in facts.kernel_lines if "SME" in ln and ("active" in ln.lower())]
    fix = (
        "add mem_encrypt=on to the kernel command line (host memory encryption, SME: protects the host's"
        " memory; recommended by libvirt's SEV guide, not needed to run SEV guests)"
    )
    if facts.cpu.vendor and not facts.cpu.amd:
        return Check(cid, False, "not an AMD CPU: SME (mem_encrypt) does not apply", "")
    if active:
        return Check(cid, True, f"host SME is active: {active[0]}")
    if value == "on":
        return Check(cid, True, "mem_encrypt=on is on the kernel command line")
    if value is not None:
        return Check(cid, False, f"the kernel command line has mem_encrypt={value}", fix)
    return Check(
        cid, False, "mem_encrypt=on is not on the kernel command line and no 'SME active' message", fix
    )


def _dev_sev_check(facts: HostFacts) -> Check:
    d = facts.dev_sev
    cid = "dev.sev"
    fix = (
        "load the ccp driver (modprobe ccp) and check dmesg for 'sev enabled'; the PSP needs SEV"
        " enabled in the BIOS"
    )
    if not d.present:
        return Check(cid, False, "/dev/sev does not exist (no SEV firmware interface)", fix)
    if d.opened is False:
        return Check(
            cid, False, f"/dev/sev exists but {d.error}", "run as root (or give the user access to /dev/sev)"
        )
    ccp = "; ".join(ln for ln in facts.kernel_lines if "API:" in ln)
    if d.status is not None:
        detail = f"/dev/sev: {d.status.describe()}"
        if d.snp_status is not None:
            detail += f"; {d.snp_status.describe()}"
        return Check(cid, True, detail)
    if d.opened is None:
        how = d.status_error or (f"kernel log: {ccp}" if ccp else "PLATFORM_STATUS not captured")
        return Check(cid, True, f"/dev/sev present in the captured tree ({how})")
    return Check(cid, False, f"/dev/sev opened but PLATFORM_STATUS failed: {d.status_error}", fix)


def _kvm_usable_check(facts: HostFacts) -> Check:
    d = facts.dev_kvm
    cid = "kvm.usable"
    if not d.present:
        return Check(
            cid,
            False,
            "/dev/kvm does not exist",
            "enable virtualization (SVM/VT-x) in the BIOS and load kvm_amd (or kvm_intel)",
        )
    if d.opened is None:
        return Check(cid, True, "/dev/kvm present in the captured tree (not opened)")
    if d.opened is False or d.kvm_api is None:
        return Check(cid, False, f"/dev/kvm: {d.error}", "run as root or join the group that owns /dev/kvm")
    if d.kvm_api != KVM_API_VERSION:
        return Check(
            cid,
            False,
            f"/dev/kvm answers KVM API version {d.kvm_api}, not {KVM_API_VERSION}",
            "use a mainline Linux KVM",
        )
    if d.boots_linux is False:
        return Check(
            cid,
            False,
            f"/dev/kvm opened, KVM API version {d.kvm_api}, but the runtime's KVM probe found that"
            f" Linux does not boot under it ({d.boots_note}; cached for this boot): guests run under"
            " TCG here, and SEV needs KVM",
            "use a host whose KVM runs guests (bare metal, or nested virtualization with SVM exposed)",
        )
    if d.boots_linux:
        seen = f"; the runtime's KVM probe booted Linux under it ({d.boots_note})"
    else:
        seen = " (whether Linux boots under it is probed when the runtime first starts a guest)"
    return Check(cid, True, f"/dev/kvm opened, KVM API version {d.kvm_api}{seen}")


def _qemu_version_check(q: QemuFacts) -> Check:
    if q.version is None:
        return Check(
            "qemu.version",
            False,
            f"QEMU not found or unusable: {q.caps_error or q.version_text}",
            "install QEMU (Debian: apt install -t bookworm-backports qemu-system-x86)",
        )
    v = ".".join(map(str, q.version))
    need = [
        f"{m} needs QEMU >= {r}"
        for m, r, t in (("SEV-ES", "6.0", (6, 0, 0)), ("SEV-SNP", "9.1", (9, 1, 0)))
        if q.version < t
    ]
    return Check(
        "qemu.version",
        True,
        f"{q.path}: {q.version_text or 'QEMU ' + v}" + (f" ({'; '.join(need)})" if need else ""),
    )


def _caps_text(q: QemuFacts) -> str:
    if q.caps is None:
        return f"query-sev-capabilities: {q.caps_error}"
    c = q.caps
    pdh = str(c.get("pdh", ""))
    return (
        f"query-sev-capabilities: cbitpos {c.get('cbitpos')}, reduced-phys-bits {c.get('reduced-phys-bits')},"
        f" PDH {len(pdh)} base64 chars" + (f" ({pdh[:16]}...)" if pdh else "")
    )


def _qemu_object_check(q: QemuFacts, obj: str) -> Check:
    cid = f"qemu.{obj}"
    if q.version is None:
        return Check(cid, False, "QEMU not found", "install QEMU")
    if obj not in q.objects:
        need = "QEMU >= 9.1" if obj == "sev-snp-guest" else "a QEMU built with SEV support (x86_64, KVM)"
        return Check(
            cid,
            False,
            f"QEMU {'.'.join(map(str, q.version))} does not know the object type {obj}",
            f"install {need}",
        )
    kh = ""
    if obj == "sev-guest" and q.kernel_hashes is False:
        return Check(
            cid,
            False,
            "QEMU's sev-guest has no kernel-hashes property (measured direct boot)",
            "install QEMU >= 7.0",
        )
    if obj == "sev-guest" and q.kernel_hashes:
        kh = " with kernel-hashes"
    if q.caps is None:
        return Check(
            cid,
            False,
            f"QEMU knows {obj}{kh}, but {_caps_text(q)}",
            "fix the kvm.* and dev.sev items above; QEMU asks KVM and /dev/sev",
        )
    return Check(cid, True, f"QEMU knows {obj}{kh}; {_caps_text(q)}")


def _firmware_check(fw: tuple[FirmwareFacts, ...]) -> Check:
    cid = "firmware.ovmf"
    fix = (
        "build OVMF from edk2 OvmfPkg/AmdSev/AmdSevX64.dsc (it has the SEV hashes table and SNP metadata;"
        ' Debian ships no AmdSev build) and set ovmf = "/path/OVMF.fd" in /etc/sevbox/config.toml'
    )
    if not fw:
        return Check(
            cid,
            False,
            "no OVMF build found (looked in /usr/share/OVMF, /usr/share/ovmf, /usr/share/qemu)",
            "install OVMF (Debian: apt install ovmf); then " + fix,
        )
    modes = [m for m in ("sev", "sev-es", "sev-snp") if any(f.good_for(m) for f in fw)]
    listing = "; ".join(f.describe() for f in fw)
    if not modes:
        return Check(
            cid, False, f"no OVMF build can do a measured kernel boot (kernel-hashes=on): {listing}", fix
        )
    return Check(cid, True, f"usable for {', '.join(modes)}: {listing}")


def _libvirt_check(lv: LibvirtFacts) -> Check:
    cid = "libvirt.sev"
    if not lv.answered:
        return Check(
            cid,
            False,
            f"libvirt: {lv.error} (sevbox does not need libvirt)",
            "only for 'sevbox libvirt': install libvirt-daemon-system and start libvirtd",
        )
    if lv.sev:
        d = ", ".join(
            f"{k} {v}"
            for k, v in lv.details.items()
            if k in ("cbitpos", "reducedPhysBits", "maxGuests", "maxESGuests")
        )
        types = f"; launchSecurity types: {', '.join(lv.sectypes)}" if lv.sectypes else ""
        return Check(cid, True, f"libvirt domcapabilities: <sev supported='yes'> ({d}){types}")
    return Check(
        cid,
        False,
        "libvirt domcapabilities: <sev supported='no'>"
        if lv.sev is False
        else "libvirt domcapabilities has no <sev> element (libvirt too old?)",
        "libvirt reports what QEMU and KVM report: fix the kvm.* and qemu.* items",
    )


def _swiotlb_check(swiotlb_mib: int, memory_mib: int) -> Check:
    cid = "guest.swiotlb"
    if swiotlb_mib == 0:
        return Check(
            cid,
            True,
            "swiotlb_mib = 0: the guest kernel sizes its bounce buffers itself"
            " (under SEV: 6% of RAM, at least 64 MiB)",
        )
    slabs = swiotlb_mib * 1024 // 2
    detail = (
        f"swiotlb_mib = {swiotlb_mib} (guest 'swiotlb={slabs}', 2 KiB slabs) of {memory_mib} MiB guest RAM;"
        " under SEV all virtio I/O is bounced through it"
    )
    if swiotlb_mib > memory_mib // 2:
        return Check(
            cid,
            False,
            detail + ": more than half the guest's memory",
            "lower swiotlb_mib or raise memory_mib in /etc/sevbox/config.toml",
        )
    return Check(cid, True, detail)


def evaluate(facts: HostFacts) -> Report:
    """Judge the facts: every check, and which modes are ready."""
    checks = [
        _cpu_check(facts.cpu, "sev"),
        _cpu_check(facts.cpu, "sev-es"),
        _cpu_check(facts.cpu, "sev-snp"),
        _mem_encrypt_check(facts),
        _kvm_check(facts, "sev"),
        _kvm_check(facts, "sev-es"),
        _kvm_check(facts, "sev-snp"),
        _dev_sev_check(facts),
        _kvm_usable_check(facts),
        _qemu_version_check(facts.qemu),
        _qemu_object_check(facts.qemu, "sev-guest"),
        _qemu_object_check(facts.qemu, "sev-snp-guest"),
        _firmware_check(facts.firmware),
        _libvirt_check(facts.libvirt),
        _swiotlb_check(facts.swiotlb_mib, facts.memory_mib),
    ]
    by_id = {c.id: c for c in checks}
    # Blockers that are not a whole check: firmware.ovmf is one item for three modes, and
    # qemu.version is fine for plain VMs while too old for SEV-ES/SNP.
    blockers: dict[str, str] = {}
    for mode in ("sev", "sev-es", "sev-snp"):
        if not any(f.good_for(mode) for f in facts.firmware):
            blockers[mode] = f"firmware.ovmf: no OVMF build found that can launch {mode} with kernel-hashes"
    v = facts.qemu.version
    for mode, least in (("sev-es", (6, 0, 0)), ("sev-snp", (9, 1, 0))):
        if v is not None and v < least and mode not in blockers:
            blockers[mode] = f"qemu.version: {mode} needs QEMU >= {least[0]}.{least[1]}"
    ready = {mode: all(by_id[i].ok for i in REQUIRED[mode]) and mode not in blockers for mode in MODES}
    cbit = red = None
    if facts.cpu.cpuid is not None and facts.cpu.cpuid.sev:
        cbit, red = facts.cpu.cpuid.cbitpos, facts.cpu.cpuid.reduced_phys_bits
    elif facts.qemu.caps is not None:
        cbit, red = facts.qemu.caps.get("cbitpos"), facts.qemu.caps.get("reduced-phys-bits")
    return Report(ready, tuple(checks), facts.cpu.strongest_offered, cbit, red, blockers)


def probe(sysroot: Path = Path("/"), **kwargs: Any) -> Report:
    """gather + evaluate (keyword arguments as for :func:`gather`)."""
    return evaluate(gather(sysroot, **kwargs))


def sev_params(sysroot: Path = Path("/")) -> tuple[int, int] | None:
    """(C-bit position, reduced physical address bits) for QEMU's sev-guest and libvirt's XML.

    From CPUID 0x8000001F when readable, else from a captured query-sev-capabilities; None when the
    CPU has no SEV or neither source is available. Cheap: runs no program.
    """
    cpu = _cpu_facts(sysroot)
    if cpu.cpuid is not None:
        return (cpu.cpuid.cbitpos, cpu.cpuid.reduced_phys_bits) if cpu.cpuid.sev else None
    try:
        raw = json.loads((sysroot / CAPTURE_DIR / "query-sev-capabilities.json").read_text())
    except (OSError, ValueError):
        return None
    caps, _ = _qmp_reply(raw) if isinstance(raw, dict) else (None, "")
    if caps is None:
        return None
    try:
        return int(caps["cbitpos"]), int(caps["reduced-phys-bits"])
    except (KeyError, TypeError, ValueError):
        return None
