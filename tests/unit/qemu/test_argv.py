"""VmSpec -> QEMU argv (pure): both boot paths, device flags for SEV, escaping, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevbox.qemu.argv import DeviceFlags, Share, VmSpec, build_argv, kernel_cmdline


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _spec(**kw: object) -> VmSpec:
    base: dict[str, object] = {
        "kernel": Path("/k/vmlinux"),
        "initrd": Path("/k/initrd.img"),
        "qmp_fd": 5,
        "channel_fd": 6,
        "shares": (Share(Path("/b/rootfs")),),
    }
    base.update(kw)
    return VmSpec(**base)  # type: ignore[arg-type]


def test_microvm_fast_path() -> None:
    argv = build_argv(_spec(cmdline="quiet"))
    assert argv[0] == "qemu-system-x86_64"
    assert _pairs(argv, "-machine") == ["microvm,pit=off,pic=off"]  # see argv.py: PIC/PIT panics
    assert _pairs(argv, "-accel") == ["tcg,tb-size=64"]
    assert _pairs(argv, "-cpu") == ["qemu64,+rdrand"]  # RDRAND: the guest's entropy without virtio-rng
    assert _pairs(argv, "-kernel") == ["/k/vmlinux"]
    assert _pairs(argv, "-initrd") == ["/k/initrd.img"]
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert "-drive" not in argv  # no firmware
    devices = _pairs(argv, "-device")
    assert "virtio-serial-device,id=vser0" in devices
    assert "virtserialport,bus=vser0.0,chardev=agent,name=sevbox.0" in devices
    assert "virtio-9p-device,fsdev=fs0,mount_tag=rootfs" in devices
    assert "socket,id=qmp,fd=5" in _pairs(argv, "-chardev")
    assert "socket,id=agent,fd=6" in _pairs(argv, "-chardev")
    assert _pairs(argv, "-fsdev") == ["local,id=fs0,path=/b/rootfs,security_model=passthrough"]


def test_q35_ovmf_bzimage_with_secure_devices() -> None:
    spec = _spec(
        machine="q35",
        kernel=Path("/k/bzImage"),
        firmware=Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        device_flags=DeviceFlags.secure(),
        rng=True,
        machine_options=("confidential-guest-support=sev0",),
        objects=("sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1",),
    )
    argv = build_argv(spec)
    assert _pairs(argv, "-machine") == ["q35,confidential-guest-support=sev0"]
    assert _pairs(argv, "-drive") == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
    ]
    assert "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1" in _pairs(argv, "-object")
    virtio = [d for d in _pairs(argv, "-device") if d.startswith("virtio-")]
    assert {d.split(",")[0] for d in virtio} == {"virtio-serial-pci", "virtio-9p-pci", "virtio-rng-pci"}
    for d in virtio:  # every virtio device, not just some
        assert d.endswith(",iommu_platform=on,disable-legacy=on,romfile="), d
    assert spec.transport == "pci"


def test_mmio_devices_take_iommu_platform_but_no_pci_options() -> None:
    argv = build_argv(_spec(device_flags=DeviceFlags.secure()))
    for d in _pairs(argv, "-device"):
        if d.startswith("virtio-"):
            assert "iommu_platform=on" in d and "disable-legacy" not in d and "romfile" not in d


def test_kvm_uses_host_cpu_and_no_tb_size() -> None:
    argv = build_argv(_spec(accel="kvm"))
    assert _pairs(argv, "-accel") == ["kvm"]
    assert _pairs(argv, "-cpu") == ["host"]


def test_commas_in_paths_are_escaped() -> None:
    argv = build_argv(_spec(shares=(Share(Path("/b/a,b"), readonly=True, security_model="none"),)))
    assert _pairs(argv, "-fsdev") == ["local,id=fs0,path=/b/a,,b,security_model=none,readonly=on"]


def test_serial_log_and_memory() -> None:
    argv = build_argv(_spec(serial_log=Path("/tmp/c.log"), memory_mib=512, vcpus=2))
    assert _pairs(argv, "-serial") == ["file:/tmp/c.log"]
    assert _pairs(argv, "-m") == ["512"] and _pairs(argv, "-smp") == ["2"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"machine": "pc"}, "machine"),
        ({"accel": "hvf"}, "accel"),
        ({"memory_mib": 1}, "memory"),
        ({"vcpus": 0}, "vcpus"),
        ({"firmware": Path("/ovmf.fd")}, "q35"),
        ({"shares": (Share(Path("/x"), tag="bad tag"),)}, "tag"),
        ({"shares": (Share(Path("/x"), security_model="open"),)}, "security model"),
    ],
)
def test_bad_specs_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _spec(**kw)


def test_kernel_cmdline() -> None:
    spec = _spec()
    line = kernel_cmdline(spec, tsc_khz=2599998)
    words = line.split()
    assert "sevbox.transport=mmio" in words and "sevbox.port=sevbox.0" in words
    assert "tsc_early_khz=2599998" in words and "tsc=reliable" in words
    assert "reboot=t" in words and "panic=-1" in words
    assert "tsc_early_khz" not in kernel_cmdline(_spec(accel="kvm"), tsc_khz=2599998)
    assert "sevbox.transport=pci" in kernel_cmdline(_spec(machine="q35"))
