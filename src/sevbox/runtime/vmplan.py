"""What the runtime will launch for a container: one source of truth for the VM's argv and for the
measurement the owner should expect.

``plan_launch`` asks the host what it can do (``sevbox.host.probe``) only when the configuration
could use encryption, and decides with :func:`sevbox.launch.choose` (failing closed). ``sandbox_args``
turns the plan into the Sandbox's launch arguments: for ``none`` the fast microvm + vmlinux path; for
SEV, SEV-ES and SNP the q35 + OVMF + bzImage path, every virtio device with ``iommu_platform=on``,
``disable-legacy=on`` and no option ROM, the ``sev-guest``/``sev-snp-guest`` object with
``kernel-hashes=on`` when the firmware has the hashes table, an EPYC vCPU model (so the owner can
compute the SEV-ES/SNP VMSAs without asking the host), and a sized swiotlb.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevbox.config import Config
from sevbox.errors import BundleError, HostError
from sevbox.launch import HostAbilities, LaunchPlan, choose

__all__ = [
    "SEV_CPU_MODEL",
    "SecureVm",
    "find_ovmf",
    "plan_launch",
    "sandbox_args",
    "secure_cmdline",
    "secure_vm",
]

log = logging.getLogger(__name__)

SEV_CPU_MODEL = "EPYC-v4"  # a fixed model: the SEV-ES/SNP VMSAs (and so the digest) depend on it
OVMF_CANDIDATES = (
    "/usr/share/ovmf/OVMF.amdsev.fd",
    "/usr/share/OVMF/OVMF.amdsev.fd",
    "/usr/share/edk2/ovmf/OVMF.amdsev.fd",
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/ovmf/OVMF.fd",
)


def _host_abilities(config: Config) -> HostAbilities:
    from sevbox.host.probe import probe

    quick = probe(
        run_qemu=False, run_libvirt=False, swiotlb_mib=config.swiotlb_mib, memory_mib=config.memory_mib
    )
    report = quick
    if quick.cpu_offers != "vm":  # only a CPU with SEV is worth asking QEMU about
        report = probe(run_libvirt=False, ovmf=config.ovmf, swiotlb_mib=config.swiotlb_mib,
                       memory_mib=config.memory_mib)  # fmt: skip
    return HostAbilities(
        ready={m: bool(report.ready.get(m)) for m in ("sev", "sev-es", "sev-snp")},
        why=report.why,
        cbitpos=report.cbitpos,
        reduced_phys_bits=report.reduced_phys_bits,
    )


def plan_launch(config: Config, host: HostAbilities | None = None) -> LaunchPlan:
    """Decide the container's launch security. Raises EncryptionUnavailable rather than downgrade."""
    if host is None:
        if config.launch_security == "none" and not config.require_encryption:
            host = HostAbilities(ready={}, why={})
        else:
            host = _host_abilities(config)
    plan = choose(config, host)
    log.info("launch security: %s (%s)", plan.mode, plan.reason)
    return plan


@dataclass(frozen=True)
class SecureVm:
    """The QEMU pieces of an encrypted launch (pure data; argv.py renders them)."""

    firmware: Path
    bios: bool  # SNP: QEMU loads OVMF with -bios (no pflash)
    objects: tuple[str, ...]
    machine_options: tuple[str, ...]
    kernel_hashes: bool
    cpu: str
    cmdline_extra: str


def find_ovmf(config: Config) -> Path:
    if config.ovmf:
        p = Path(config.ovmf)
        if not p.is_file():
            raise HostError(f"configured OVMF {p} does not exist")
        return p
    for c in OVMF_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise HostError("no OVMF firmware found (install Debian's ovmf package or set 'ovmf' in the config)")


def secure_vm(plan: LaunchPlan, config: Config, *, firmware: Path, has_hashes_table: bool,
              dh_cert: Path | None = None, session: Path | None = None) -> SecureVm:  # fmt: skip
    """The objects and options for ``plan`` (pure)."""
    if plan.cbitpos is None or plan.reduced_phys_bits is None:
        raise HostError("the host did not report its C-bit position and reduced physical bits")
    common = ["id=sev0", f"cbitpos={plan.cbitpos}", f"reduced-phys-bits={plan.reduced_phys_bits}",
              f"policy={plan.policy:#x}"]  # fmt: skip
    if has_hashes_table:
        common.append("kernel-hashes=on")
    machine = ["confidential-guest-support=sev0"]
    objects: list[str] = []
    if plan.mode == "sev-snp":
        objects.append(f"memory-backend-memfd,id=ram1,size={config.memory_mib}M,share=true,prealloc=false")
        machine.append("memory-backend=ram1")
        objects.append(",".join(["sev-snp-guest", *common]))
    else:
        if dh_cert is not None and session is not None:
            common += [f"dh-cert-file={dh_cert}", f"session-file={session}"]
        objects.append(",".join(["sev-guest", *common]))
    slabs = config.swiotlb_mib * 1024 * 1024 // 2048  # the kernel counts 2 KiB slabs
    return SecureVm(
        firmware=firmware, bios=plan.mode == "sev-snp", objects=tuple(objects),
        machine_options=tuple(machine), kernel_hashes=has_hashes_table, cpu=SEV_CPU_MODEL,
        cmdline_extra=f"swiotlb={slabs}",
    )  # fmt: skip


def secure_cmdline(vm: SecureVm) -> str:
    """The kernel command line of an encrypted launch (measured with kernel-hashes=on)."""
    from sevbox.qemu.argv import VmSpec, kernel_cmdline

    return kernel_cmdline(VmSpec(kernel=Path("bzImage"), machine="q35", accel="kvm"), extra=vm.cmdline_extra)


DH_CERT_ANNOTATION = "sevbox.sev.dh-cert-file"
SESSION_ANNOTATION = "sevbox.sev.session-file"


def owner_session(annotations: Mapping[str, str], bundle_dir: Path) -> tuple[Path, Path] | None:
    """The guest owner's launch session for SEV/SEV-ES (``sevbox attest session`` writes both files):
    annotations ``sevbox.sev.dh-cert-file`` and ``sevbox.sev.session-file``, relative to the bundle."""
    dh, sess = annotations.get(DH_CERT_ANNOTATION), annotations.get(SESSION_ANNOTATION)
    if dh is None and sess is None:
        return None
    if dh is None or sess is None:
        raise BundleError(f"annotations {DH_CERT_ANNOTATION} and {SESSION_ANNOTATION} go together")
    paths = (bundle_dir / dh, bundle_dir / sess)
    for name, p in zip((DH_CERT_ANNOTATION, SESSION_ANNOTATION), paths, strict=True):
        if not p.is_file():
            raise BundleError(f"annotation {name}: {p} does not exist")
    return paths


def sandbox_args(
    plan: LaunchPlan, config: Config, session: tuple[Path, Path] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``Sandbox.launch`` that realise ``plan``. ``session``: the owner's GODH
    certificate and session blob (SEV/SEV-ES only: an SNP launch has no such session)."""
    if session is not None and plan.mode not in ("sev", "sev-es"):
        raise BundleError(f"a launch session (dh-cert/session files) needs SEV or SEV-ES, not {plan.mode}")
    args: dict[str, Any] = {"memory_mib": config.memory_mib, "vcpus": config.vcpus}
    if config.accel != "auto":
        args["accel"] = config.accel
    if not plan.encrypted:
        return args
    from sevbox.sev.ovmf import parse_ovmf

    firmware = find_ovmf(config)
    ovmf = parse_ovmf(firmware.read_bytes())
    dh_cert, sess = session if session is not None else (None, None)
    vm = secure_vm(plan, config, firmware=firmware, has_hashes_table=ovmf.has_sev_hashes_table,
                   dh_cert=dh_cert, session=sess)  # fmt: skip
    cmdline = secure_cmdline(vm)
    overrides: dict[str, Any] = {
        "objects": vm.objects,
        "machine_options": vm.machine_options,
        "cpu": vm.cpu,
        "cmdline": cmdline,
        "firmware_bios": vm.bios,
    }
    args.update(machine="q35", firmware=firmware, secure_devices=True, accel="kvm", spec_overrides=overrides)
    return args
