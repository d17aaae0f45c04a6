"""Choosing a container's launch security, and refusing to run when the choice can't be honoured.

Pure: the host's abilities come in as values (from ``sevbox.host.probe``), the decision goes out as a
:class:`LaunchPlan`. The rules:

* an explicit mode (``sev``, ``sev-es``, ``sev-snp``) the host can't give fails closed, always;
* ``auto`` takes the strongest mode the host is ready for (SNP > SEV-ES > SEV); with none ready it
  runs unencrypted only when encryption is not required, and says so;
* ``none`` with ``require_encryption`` is a contradiction and is refused.

Nothing here ever downgrades silently: the plan carries the reason, which goes into the container's
state (annotation ``sevbox.launch-security.effective``) and the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sevbox.config import Config
from sevbox.errors import EncryptionUnavailable

__all__ = ["ENCRYPTED_MODES", "HostAbilities", "LaunchPlan", "choose"]

ENCRYPTED_MODES = ("sev-snp", "sev-es", "sev")  # strongest first


@dataclass(frozen=True)
class HostAbilities:
    """What the host can launch. ``ready`` maps each of sev, sev-es, sev-snp to a bool; ``why`` gives,
    for a mode that isn't ready, the first failed check's detail."""

    ready: Mapping[str, bool]
    why: Mapping[str, str]
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None


@dataclass(frozen=True)
class LaunchPlan:
    mode: str  # none | sev | sev-es | sev-snp
    requested: str
    required: bool
    reason: str
    policy: int  # the guest policy the VM is launched with (u32 for SEV/ES, u64 for SNP; 0 for none)
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None

    @property
    def encrypted(self) -> bool:
        return self.mode != "none"

    def annotations(self) -> dict[str, str]:
        return {
            "sevbox.launch-security.effective": self.mode,
            "sevbox.launch-security.reason": self.reason,
        }


_SEV_POLICY_ES = 0x4  # SEV policy bit 2: SEV-ES required


def _policy(mode: str, config: Config) -> int:
    if mode == "sev":
        return config.sev_policy & ~_SEV_POLICY_ES
    if mode == "sev-es":
        return config.sev_policy | _SEV_POLICY_ES
    if mode == "sev-snp":
        return config.snp_policy
    return 0


def _refuse(mode: str, host: HostAbilities) -> EncryptionUnavailable:
    why = host.why.get(mode) or "the host is not ready for it"
    return EncryptionUnavailable(
        f"launch security {mode} is not available on this host: {why}",
        hint="run 'sevbox check' to see what is missing",
    )


def choose(config: Config, host: HostAbilities) -> LaunchPlan:
    requested, required = config.launch_security, config.require_encryption

    def plan(mode: str, reason: str) -> LaunchPlan:
        return LaunchPlan(
            mode=mode, requested=requested, required=required, reason=reason,
            policy=_policy(mode, config), cbitpos=host.cbitpos if mode != "none" else None,
            reduced_phys_bits=host.reduced_phys_bits if mode != "none" else None,
        )  # fmt: skip

    if requested in ENCRYPTED_MODES:
        if not host.ready.get(requested):
            raise _refuse(requested, host)
        return plan(requested, f"{requested} requested and available")
    if requested == "none":
        if required:
            raise EncryptionUnavailable(
                "launch_security is 'none' but require_encryption is set: refusing to run unencrypted"
            )
        return plan("none", "launch security 'none' requested: memory is NOT encrypted")
    for mode in ENCRYPTED_MODES:
        if host.ready.get(mode):
            return plan(mode, f"auto: {mode} is the strongest mode this host is ready for")
    why = host.why.get("sev") or "no SEV support found"
    if required:
        raise EncryptionUnavailable(
            f"encryption is required but this host can't encrypt guest memory: {why}",
            hint="run 'sevbox check' to see what is missing",
        )
    return plan("none", f"auto: this host has no usable SEV ({why}): memory is NOT encrypted")
