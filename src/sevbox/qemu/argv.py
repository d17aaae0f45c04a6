"""PURE: a VM description (:class:`VmSpec`) in, QEMU's argv out. No files, processes or clocks.

Two boot paths:

* ``microvm`` + an uncompressed ``vmlinux`` through its PVH entry, no firmware: the fast path.
* ``q35`` + OVMF + a ``bzImage``: what SEV needs (OVMF measures the kernel hashes). Slow under TCG.

Every virtio device takes the same :class:`DeviceFlags` (``iommu_platform=on``,
``disable-legacy=on`` on PCI, option ROMs off): what a confidential guest needs. Launch security
objects (``sev-guest`` etc.) plug in through ``VmSpec.machine_options`` and ``VmSpec.objects``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DeviceFlags",
    "Share",
    "VmSpec",
    "build_argv",
    "kernel_cmdline",
]

MACHINES = ("microvm", "q35")
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class DeviceFlags:
    """Options set on every virtio device. ``secure()`` is what SEV guests need."""

    iommu_platform: bool = False
    disable_legacy: bool = False  # PCI only; microvm's virtio-mmio has no legacy switch
    no_rom: bool = False  # PCI only: romfile="" (iPXE/option ROMs don't know SEV)

    @classmethod
    def secure(cls) -> DeviceFlags:
        return cls(iommu_platform=True, disable_legacy=True, no_rom=True)


@dataclass(frozen=True)
class Share:
    """A host directory shared into the guest over virtio-9p, mounted by ``tag``."""

    path: Path
    tag: str = "rootfs"
    readonly: bool = False
    security_model: str = "passthrough"  # "passthrough" when QEMU runs as root, else "none"


@dataclass(frozen=True)
class VmSpec:
    kernel: Path  # vmlinux (PVH) without firmware; bzImage with firmware
    initrd: Path | None = None
    machine: str = "microvm"
    accel: str = "tcg"
    memory_mib: int = 256
    vcpus: int = 1
    firmware: Path | None = None  # OVMF code image (pflash, read-only) or None
    firmware_vars: Path | None = None  # OVMF vars image (a private copy), if the build has one
    firmware_bios: bool = False  # load the firmware with -bios (SEV-SNP: QEMU refuses pflash)
    paused: bool = False  # -S: stop before the first instruction (pre-attestation: measure, inject, cont)
    cmdline: str = ""
    cpu: str | None = None  # default: "host" under KVM, "qemu64,+rdrand" under TCG
    qmp_fd: int | None = None  # inherited socket: QMP
    channel_fd: int | None = None  # inherited socket: the agent's virtio-serial port
    channel_name: str = "sevbox.0"
    shares: tuple[Share, ...] = ()
    serial_log: Path | None = None  # the guest console (kernel messages, agent's fatal errors)
    rng: bool = False  # virtio-rng (untrusted under SEV; RDRAND is preferred)
    device_flags: DeviceFlags = field(default_factory=DeviceFlags)
    tb_size_mib: int | None = 64  # TCG translation cache; smaller = less host memory
    machine_options: tuple[str, ...] = ()  # e.g. "confidential-guest-support=sev0"
    objects: tuple[str, ...] = ()  # -object values, e.g. "sev-guest,id=sev0,..."
    kernel_hashes: bool = False  # reserved for launch security (set on the sev-guest object)

    def __post_init__(self) -> None:
        if self.machine not in MACHINES:
            raise ValueError(f"machine must be one of {MACHINES}, not {self.machine!r}")
        if self.accel not in ACCELS:
            raise ValueError(f"accel must be one of {ACCELS}, not {self.accel!r}")
        if not 16 <= self.memory_mib <= 1 << 20:
            raise ValueError(f"memory_mib {self.memory_mib} out of range 16..1048576")
        if not 1 <= self.vcpus <= 255:
            raise ValueError(f"vcpus {self.vcpus} out of range 1..255")
        if self.firmware is not None and self.machine != "q35":
            raise ValueError("firmware (OVMF) boots only with machine q35")
        for s in self.shares:
            if not s.tag or len(s.tag) > 31 or not s.tag.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"bad 9p mount tag {s.tag!r}")
            if s.security_model not in ("passthrough", "mapped-xattr", "none"):
                raise ValueError(f"bad 9p security model {s.security_model!r}")

    @property
    def pci(self) -> bool:
        return self.machine == "q35"

    @property
    def transport(self) -> str:
        """The virtio transport the guest must load drivers for."""
        return "pci" if self.pci else "mmio"


def _opt(value: str | Path) -> str:
    """Escape a value for QEMU's comma-separated option syntax (a comma is doubled)."""
    return str(value).replace(",", ",,")


def _dev(spec: VmSpec, mmio: str, pci: str, *props: str) -> list[str]:
    f = spec.device_flags
    opts = [pci if spec.pci else mmio, *props]
    if f.iommu_platform:
        opts.append("iommu_platform=on")
    if spec.pci and f.disable_legacy:
        opts.append("disable-legacy=on")
    if spec.pci and f.no_rom:
        opts.append("romfile=")
    return ["-device", ",".join(opts)]


def kernel_cmdline(spec: VmSpec, *, tsc_khz: int | None = None, extra: str = "") -> str:
    """The guest kernel command line for a sevbox guest (tuned for fast boots; see BOOT-FACTS)."""
    words = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "reboot=t",
        "cryptomgr.notests",
        "no_timer_check",
        "i8042.noaux",
        "i8042.nokbd",
        "8250.nr_uarts=1",
        "rdinit=/init",
        f"sevbox.transport={spec.transport}",
        f"sevbox.port={spec.channel_name}",
    ]
    if spec.accel == "tcg" and tsc_khz:
        # microvm has no HPET/PM timer to calibrate against: tell the kernel the TSC rate
        words += [f"tsc_early_khz={tsc_khz}", "tsc=reliable"]
    if extra:
        words.append(extra)
    return " ".join(words)


def build_argv(spec: VmSpec, qemu: str = "qemu-system-x86_64") -> list[str]:
    """QEMU's argv for ``spec``. Inherited fds (QMP, channel) must be passed to the child as-is."""
    accel = (
        "kvm" if spec.accel == "kvm" else (f"tcg,tb-size={spec.tb_size_mib}" if spec.tb_size_mib else "tcg")
    )
    # microvm: no legacy PIT/PIC. With them, under TCG, a PIT tick can arrive through the still
    # unprogrammed 8259 as vector 0 when the kernel first enables interrupts: a "divide error"
    # panic in start_kernel in 7 of 8 boots measured here. The TSC rate comes from tsc_early_khz.
    machine = ["microvm", "pit=off", "pic=off"] if spec.machine == "microvm" else ["q35"]
    machine += list(spec.machine_options)
    cpu = spec.cpu or ("host" if spec.accel == "kvm" else "qemu64,+rdrand")
    argv = [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        ",".join(machine),
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-m",
        str(spec.memory_mib),
        "-smp",
        str(spec.vcpus),
    ]
    if spec.paused:
        argv.append("-S")
    for obj in spec.objects:
        argv += ["-object", obj]
    if spec.firmware is not None and spec.firmware_bios:
        argv += ["-bios", str(spec.firmware)]
    elif spec.firmware is not None:
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(spec.firmware)}"]
        if spec.firmware_vars is not None:
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={_opt(spec.firmware_vars)}"]
    argv += ["-kernel", str(spec.kernel)]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    if spec.cmdline:
        argv += ["-append", spec.cmdline]
    argv += ["-serial", f"file:{spec.serial_log}" if spec.serial_log else "none"]
    if spec.qmp_fd is not None:
        argv += ["-chardev", f"socket,id=qmp,fd={spec.qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    if spec.channel_fd is not None:
        argv += ["-chardev", f"socket,id=agent,fd={spec.channel_fd}"]
        argv += _dev(spec, "virtio-serial-device", "virtio-serial-pci", "id=vser0")
        argv += ["-device", f"virtserialport,bus=vser0.0,chardev=agent,name={_opt(spec.channel_name)}"]
    for i, s in enumerate(spec.shares):
        fs = f"local,id=fs{i},path={_opt(s.path)},security_model={s.security_model}"
        if s.readonly:
            fs += ",readonly=on"
        argv += ["-fsdev", fs]
        argv += _dev(spec, "virtio-9p-device", "virtio-9p-pci", f"fsdev=fs{i}", f"mount_tag={s.tag}")
    if spec.rng:
        argv += ["-object", "rng-random,id=rng0,filename=/dev/urandom"]
        argv += _dev(spec, "virtio-rng-device", "virtio-rng-pci", "rng=rng0")
    return argv
