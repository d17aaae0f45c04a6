"""The launch digest the owner should expect for exactly what the runtime launches.

The inputs come from the same functions that build the VM's argv (:mod:`sevbox.runtime.vmplan`):
the firmware (``find_ovmf``), the vCPU model and whether ``kernel-hashes=on`` is passed
(``secure_vm``), the kernel command line (``secure_cmdline``), the vCPU count and the policy (the
config and :func:`sevbox.launch.choose`); the kernel and initrd are the guest image's bzImage and
initrd, as ``Sandbox.launch`` boots them. The digest is then computed by :mod:`sevbox.sev.measure`.

Layers: :func:`launch_inputs` and :func:`expected_digest` are pure (values in, values out);
:func:`compute` reads the files (the edge).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from sevbox.config import Config
from sevbox.errors import ConfigError, UsageError
from sevbox.launch import ENCRYPTED_MODES, HostAbilities, LaunchPlan, choose
from sevbox.runtime.vmplan import secure_cmdline, secure_vm
from sevbox.sev import measure as M
from sevbox.sev.hashes import KernelHashes, cmdline_bytes
from sevbox.sev.ovmf import Ovmf, parse_ovmf
from sevbox.sev.vmsa import CPU_SIGS, FpuInit, VmmType

__all__ = [
    "SNP_GUEST_FEATURES",
    "VMSA_FPU",
    "Expected",
    "LaunchInputs",
    "compute",
    "expected_digest",
    "launch_inputs",
    "what_if_plan",
]

# What QEMU 10 on a current host kernel puts in the VMSAs it measures: SNP's SEV_FEATURES has only
# SNPActive (QEMU leaves debug-swap off), and the kernel initialises MXCSR and the x87 FCW.
SNP_GUEST_FEATURES = 0x1
VMSA_FPU = FpuInit.CURRENT
# Neither the C-bit position nor the reduced physical bits is measured; a what-if plan needs values.
_WHAT_IF_CBITPOS = 51
_WHAT_IF_REDUCED_PHYS_BITS = 1


@dataclass(frozen=True, kw_only=True)
class LaunchInputs:
    """Everything a launch digest depends on, as the runtime would launch it."""

    mode: str  # sev | sev-es | sev-snp
    firmware: Path
    kernel: Path
    initrd: Path
    cmdline: str
    vcpus: int
    cpu: str  # QEMU -cpu model (decides the VMSAs' CPUID signature)
    policy: int
    kernel_hashes: bool  # the firmware has the hashes table, so QEMU gets kernel-hashes=on

    @property
    def vcpu_sig(self) -> int:
        return CPU_SIGS[self.cpu]


@dataclass(frozen=True, kw_only=True)
class Expected:
    inputs: LaunchInputs
    digest: bytes  # 32 bytes (SEV, SEV-ES: GCTX.LD) or 48 (SNP: MEASUREMENT)
    firmware_sha256: bytes
    kernel_sha256: bytes
    initrd_sha256: bytes
    cmdline_sha256: bytes


def what_if_plan(mode: str, config: Config) -> LaunchPlan:
    """The plan a host ready for ``mode`` would make from ``config`` (pure): the policy is the one
    :func:`sevbox.launch.choose` gives that mode."""
    if mode not in ENCRYPTED_MODES:
        raise UsageError(f"unknown launch security mode {mode!r} (use sev, sev-es or sev-snp)")
    host = HostAbilities(
        ready={mode: True}, why={}, cbitpos=_WHAT_IF_CBITPOS, reduced_phys_bits=_WHAT_IF_REDUCED_PHYS_BITS
    )
    return choose(replace(config, launch_security=mode, require_encryption=True), host)


def launch_inputs(
    plan: LaunchPlan, config: Config, *, firmware: Path, has_hashes_table: bool, kernel: Path, initrd: Path
) -> LaunchInputs:
    """The measured inputs of ``plan``, taken from the functions that build its argv (pure)."""
    if not plan.encrypted:
        raise UsageError("an unencrypted launch (launch security none) has no launch measurement")
    vm = secure_vm(plan, config, firmware=firmware, has_hashes_table=has_hashes_table)
    return LaunchInputs(
        mode=plan.mode, firmware=vm.firmware, kernel=kernel, initrd=initrd, cmdline=secure_cmdline(vm),
        vcpus=config.vcpus, cpu=vm.cpu, policy=plan.policy, kernel_hashes=vm.kernel_hashes,
    )  # fmt: skip


def no_hashes_table(firmware: Path) -> ConfigError:
    return ConfigError(
        f"OVMF {firmware} has no SEV kernel hashes table: the kernel, initrd and command line would "
        "NOT be measured (the digest would vouch for the firmware only, whatever it boots)",
        hint="use an OVMF built from OvmfPkg/AmdSev: --ovmf PATH, or 'ovmf' in the sevbox config",
    )


def expected_digest(*, inputs: LaunchInputs, ovmf: Ovmf, kernel_hashes: KernelHashes) -> bytes:
    """The launch digest of ``inputs`` (pure: the firmware parsed, the kernel files as hashes)."""
    if not inputs.kernel_hashes or not ovmf.has_sev_hashes_table:
        raise no_hashes_table(inputs.firmware)
    if inputs.mode == "sev":
        return M.sev_digest(ovmf=ovmf, kernel_hashes=kernel_hashes)
    if inputs.mode == "sev-es":
        return M.seves_digest(
            ovmf=ovmf, vcpus=inputs.vcpus, vcpu_sig=inputs.vcpu_sig, kernel_hashes=kernel_hashes,
            vmm_type=VmmType.QEMU, fpu=VMSA_FPU,
        )  # fmt: skip
    if inputs.mode == "sev-snp":
        digest, _ = M.snp_digest(
            ovmf=ovmf, vcpus=inputs.vcpus, vcpu_sig=inputs.vcpu_sig, guest_features=SNP_GUEST_FEATURES,
            kernel_hashes=kernel_hashes, vmm_type=VmmType.QEMU, fpu=VMSA_FPU,
        )  # fmt: skip
        return digest
    raise UsageError(f"unknown launch security mode {inputs.mode!r}")


def _sha256_file(path: Path, what: str) -> bytes:
    from sevbox.files import sha256_file

    try:
        return sha256_file(path)
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {path}: {err.strerror or err}") from None


def compute(inputs: LaunchInputs) -> Expected:
    """Read the firmware, kernel and initrd of ``inputs`` and compute the expected digest."""
    try:
        firmware = inputs.firmware.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the firmware {inputs.firmware}: {err.strerror or err}") from None
    ovmf = parse_ovmf(firmware)
    kh = KernelHashes(
        kernel=_sha256_file(inputs.kernel, "kernel"),
        initrd=_sha256_file(inputs.initrd, "initrd"),
        cmdline=hashlib.sha256(cmdline_bytes(inputs.cmdline)).digest(),
    )
    return Expected(
        inputs=inputs, digest=expected_digest(inputs=inputs, ovmf=ovmf, kernel_hashes=kh),
        firmware_sha256=hashlib.sha256(firmware).digest(), kernel_sha256=kh.kernel,
        initrd_sha256=kh.initrd, cmdline_sha256=kh.cmdline,
    )  # fmt: skip
