"""SEV-ES / SEV-SNP initial VMSA pages (the encrypted vCPU register state that is measured).

Under SEV-ES and SNP each vCPU's initial state is a 4 KiB VMSA page that becomes part of the launch
digest, so the owner must rebuild it bit for bit. The layout is the VMCB save area of AMD64 APM vol. 2,
table B-4 (Linux ``struct sev_es_save_area``); unnamed gaps are ``reserved_<offset>``. The values are
what KVM and QEMU (or another VMM) set at vCPU reset:

* the boot vCPU starts at the reset vector 0xfffffff0; the others at the SEV-ES AP reset address from
  the OVMF footer table (CS base = high 16 bits, RIP = low 16 bits);
* RDX holds the CPUID signature (family/model/stepping) under QEMU, 0x600 under EC2 and GCE;
* ``sev_features`` (SEV_FEATURES, 0x3b0) is 0 for SEV-ES and the guest features (e.g. 0x1) for SNP;
* KVM sets EFER.SVME, CR4.MCE, and PAT; GCE overwrites PAT; EC2 uses other segment attributes;
* FPU: Linux >= 6.x (KVM's ``fpstate`` init, with QEMU >= 8.x) reports MXCSR=0x1f80 and x87 FCW=0x37f
  (the *current* layout, the default). Older kernels left both 0 (the *legacy* layout, which
  sevctl and virt-qemu-sev-validate still build). EC2 and GCE leave both 0.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "BSP_EIP",
    "CPU_SIGS",
    "FpuInit",
    "VmmType",
    "VmsaState",
    "cpu_sig",
    "vmsa_page",
    "vmsa_pages",
]

PAGE_SIZE = 4096
BSP_EIP = 0xFFFFFFF0


class VmmType(enum.Enum):
    """Which VMM launched the guest (values are sev-snp-measure's --vmm-type spellings)."""

    QEMU = "QEMU"
    EC2 = "ec2"
    GCE = "gce"

    @classmethod
    def parse(cls, text: str) -> VmmType:
        for v in cls:
            if text in (v.value, v.name, v.value.lower()):
                return v
        raise ValueError(f"unknown VMM type {text!r} (QEMU, ec2 or gce)")


class FpuInit(enum.Enum):
    """Initial MXCSR / x87 FCW in the VMSA under QEMU/KVM (see module docstring)."""

    CURRENT = "current"
    LEGACY = "legacy"


def cpu_sig(family: int, model: int, stepping: int) -> int:
    """CPUID Fn0000_0001_EAX for a family/model/stepping (AMD CPUID spec #25481)."""
    if not 0 <= family <= 0x0F + 0xFF:
        raise ValueError(f"CPU family {family} is out of range (0..270)")
    if not 0 <= model <= 0xFF:
        raise ValueError(f"CPU model {model} is out of range (0..255)")
    if not 0 <= stepping <= 0xF:
        raise ValueError(f"CPU stepping {stepping} is out of range (0..15)")
    base_family, ext_family = (0xF, family - 0xF) if family > 0xF else (family, 0)
    return (ext_family << 20) | ((model >> 4) << 16) | (base_family << 8) | ((model & 0xF) << 4) | stepping


_EPYC = cpu_sig(23, 1, 2)
_ROME = cpu_sig(23, 49, 0)
_MILAN = cpu_sig(25, 1, 1)
_GENOA = cpu_sig(25, 17, 0)

#: QEMU's built-in AMD EPYC CPU models (``-cpu NAME``) and their CPUID signatures.
CPU_SIGS: dict[str, int] = {
    **{n: _EPYC for n in ("EPYC", "EPYC-v1", "EPYC-v2", "EPYC-IBPB", "EPYC-v3", "EPYC-v4")},
    **{n: _ROME for n in ("EPYC-Rome", "EPYC-Rome-v1", "EPYC-Rome-v2", "EPYC-Rome-v3")},
    **{n: _MILAN for n in ("EPYC-Milan", "EPYC-Milan-v1", "EPYC-Milan-v2")},
    **{n: _GENOA for n in ("EPYC-Genoa", "EPYC-Genoa-v1")},
    "EPYC-Turin": cpu_sig(26, 0, 0),
}


@dataclass(frozen=True, kw_only=True)
class VmsaState:
    """What decides the VMSA contents, apart from the start address."""

    vcpu_sig: int = 0
    sev_features: int = 0
    vmm_type: VmmType = VmmType.QEMU
    fpu: FpuInit = FpuInit.CURRENT


# Offsets in the save area (APM vol. 2 table B-4).
_SEGS = {"es": 0x00, "cs": 0x10, "ss": 0x20, "ds": 0x30, "fs": 0x40, "gs": 0x50}
_GDTR, _LDTR, _IDTR, _TR = 0x60, 0x70, 0x80, 0x90
_EFER, _CR4, _CR0, _DR7, _DR6, _RFLAGS, _RIP = 0xD0, 0x148, 0x158, 0x160, 0x168, 0x170, 0x178
_G_PAT, _RDX, _SEV_FEATURES, _XCR0 = 0x268, 0x310, 0x3B0, 0x3E8
_MXCSR, _X87_FCW = 0x408, 0x410


def _seg(page: bytearray, at: int, selector: int, attrib: int, limit: int, *, base: int = 0) -> None:
    struct.pack_into("<HHIQ", page, at, selector, attrib, limit, base)


def vmsa_page(eip: int, state: VmsaState) -> bytes:
    """The 4 KiB VMSA of a vCPU that starts at ``eip``."""
    vmm = state.vmm_type
    cs_attr, ss_attr, tr_attr = 0x9B, 0x93, 0x8B
    g_pat = 0x0007040600070406  # PAT reset value (APM vol. 2 A.3)
    rdx = state.vcpu_sig
    mxcsr, fcw = (0x1F80, 0x37F) if state.fpu is FpuInit.CURRENT else (0, 0)
    if vmm is VmmType.EC2:
        cs_attr = 0x9A if eip == BSP_EIP else 0x9B
        ss_attr, tr_attr, rdx, mxcsr, fcw = 0x92, 0x83, 0x600, 0, 0
    elif vmm is VmmType.GCE:
        g_pat, rdx, mxcsr, fcw = 0x00070106, 0x600, 0, 0

    page = bytearray(PAGE_SIZE)
    for name, at in _SEGS.items():
        if name == "cs":
            _seg(page, at, 0xF000, cs_attr, 0xFFFF, base=eip & 0xFFFF0000)
        elif name == "ss":
            _seg(page, at, 0, ss_attr, 0xFFFF)
        else:
            _seg(page, at, 0, 0x93, 0xFFFF)
    _seg(page, _GDTR, 0, 0, 0xFFFF)
    _seg(page, _LDTR, 0, 0x82, 0xFFFF)
    _seg(page, _IDTR, 0, 0, 0xFFFF)
    _seg(page, _TR, 0, tr_attr, 0xFFFF)
    struct.pack_into("<Q", page, _EFER, 0x1000)  # KVM sets EFER.SVME
    struct.pack_into("<Q", page, _CR4, 0x40)  # KVM sets CR4.MCE
    struct.pack_into("<Q", page, _CR0, 0x10)
    struct.pack_into("<Q", page, _DR7, 0x400)
    struct.pack_into("<Q", page, _DR6, 0xFFFF0FF0)
    struct.pack_into("<Q", page, _RFLAGS, 0x2)
    struct.pack_into("<Q", page, _RIP, eip & 0xFFFF)
    struct.pack_into("<Q", page, _G_PAT, g_pat)
    struct.pack_into("<Q", page, _RDX, rdx)
    struct.pack_into("<Q", page, _SEV_FEATURES, state.sev_features)
    struct.pack_into("<Q", page, _XCR0, 0x1)
    struct.pack_into("<I", page, _MXCSR, mxcsr)
    struct.pack_into("<H", page, _X87_FCW, fcw)
    return bytes(page)


def vmsa_pages(*, vcpus: int, ap_eip: int, state: VmsaState) -> list[bytes]:
    """One VMSA per vCPU: the boot vCPU's, then ``vcpus - 1`` copies of the AP page."""
    if vcpus < 1:
        raise ValueError("the number of vCPUs must be at least 1")
    bsp = vmsa_page(BSP_EIP, state)
    if vcpus == 1:
        return [bsp]
    ap = vmsa_page(ap_eip, state)
    return [bsp] + [ap] * (vcpus - 1)
