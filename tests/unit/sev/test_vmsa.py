"""VMSA pages: byte-exact with sevctl's and libvirt's (legacy FPU), and the current layout."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sevbox.sev import vmsa as V
from sevbox.sev.ovmf import parse_ovmf

DATA = Path(__file__).resolve().parents[2] / "data" / "measure"
SEVCTL_OVMF = parse_ovmf((DATA / "ovmf_sevctl_amdsev_trimmed.bin").read_bytes())
VMSA0 = (DATA / "vmsa0.bin").read_bytes()
VMSA1 = (DATA / "vmsa1.bin").read_bytes()
MILAN = V.cpu_sig(25, 1, 1)


def test_cpu_sigs() -> None:
    assert V.CPU_SIGS["EPYC-v4"] == 0x800F12
    assert V.CPU_SIGS["EPYC-Rome"] == 0x830F10
    assert V.CPU_SIGS["EPYC-Milan"] == MILAN == 0xA00F11
    assert V.CPU_SIGS["EPYC-Genoa"] == 0xA10F10
    assert V.CPU_SIGS["EPYC-Turin"] == 0xB00F00
    assert V.cpu_sig(6, 0x3A, 9) == 0x306A9
    for bad in ((-1, 0, 0), (300, 0, 0), (25, 256, 0), (25, 1, 16)):
        with pytest.raises(ValueError):
            V.cpu_sig(*bad)


def test_legacy_matches_sevctl_vmsas() -> None:
    assert SEVCTL_OVMF.sev_es_reset_eip == 0x80B004
    state = V.VmsaState(vcpu_sig=MILAN, fpu=V.FpuInit.LEGACY)
    pages = V.vmsa_pages(vcpus=3, ap_eip=0x80B004, state=state)
    assert pages[0] == VMSA0
    assert pages[1] == VMSA1 and pages[2] == VMSA1


def test_current_differs_only_in_fpu() -> None:
    cur = V.vmsa_page(V.BSP_EIP, V.VmsaState(vcpu_sig=MILAN))
    diff = [i for i in range(4096) if cur[i] != VMSA0[i]]
    assert diff == [0x408, 0x409, 0x410, 0x411]
    assert struct.unpack_from("<I", cur, 0x408)[0] == 0x1F80
    assert struct.unpack_from("<H", cur, 0x410)[0] == 0x37F


def test_fields() -> None:
    page = V.vmsa_page(0x80B004, V.VmsaState(vcpu_sig=0x1234, sev_features=0x21))
    sel, attr, limit, base = struct.unpack_from("<HHIQ", page, 0x10)  # CS
    assert (sel, attr, limit, base) == (0xF000, 0x9B, 0xFFFF, 0x800000)
    assert struct.unpack_from("<Q", page, 0x178)[0] == 0xB004  # RIP
    assert struct.unpack_from("<Q", page, 0x310)[0] == 0x1234  # RDX
    assert struct.unpack_from("<Q", page, 0x3B0)[0] == 0x21  # SEV_FEATURES


def test_vmm_types() -> None:
    ec2_bsp = V.vmsa_page(V.BSP_EIP, V.VmsaState(vcpu_sig=MILAN, vmm_type=V.VmmType.EC2))
    ec2_ap = V.vmsa_page(0x80B004, V.VmsaState(vcpu_sig=MILAN, vmm_type=V.VmmType.EC2))
    assert struct.unpack_from("<H", ec2_bsp, 0x12)[0] == 0x9A
    assert struct.unpack_from("<H", ec2_ap, 0x12)[0] == 0x9B
    assert struct.unpack_from("<Q", ec2_bsp, 0x310)[0] == 0x600
    assert struct.unpack_from("<H", ec2_bsp, 0x92)[0] == 0x83  # TR
    gce = V.vmsa_page(V.BSP_EIP, V.VmsaState(vcpu_sig=MILAN, vmm_type=V.VmmType.GCE))
    assert struct.unpack_from("<Q", gce, 0x268)[0] == 0x70106
    assert struct.unpack_from("<I", gce, 0x408)[0] == 0  # no FPU init outside QEMU
    assert V.VmmType.parse("ec2") is V.VmmType.EC2 and V.VmmType.parse("QEMU") is V.VmmType.QEMU
    with pytest.raises(ValueError):
        V.VmmType.parse("xen")


def test_vcpu_count() -> None:
    with pytest.raises(ValueError):
        V.vmsa_pages(vcpus=0, ap_eip=0, state=V.VmsaState())
    assert len(V.vmsa_pages(vcpus=64, ap_eip=0x80B004, state=V.VmsaState())) == 64
