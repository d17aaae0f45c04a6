from __future__ import annotations

import pytest

from sevbox.config import Config
from sevbox.errors import EncryptionUnavailable
from sevbox.launch import HostAbilities, choose

NO_SEV = HostAbilities(
    ready={"sev": False, "sev-es": False, "sev-snp": False},
    why={"sev": "CPU has no SEV", "sev-es": "CPU has no SEV-ES", "sev-snp": "no SNP"},
)
SEV_ES = HostAbilities(
    ready={"sev": True, "sev-es": True, "sev-snp": False},
    why={"sev-snp": "kvm_amd.sev_snp is N"},
    cbitpos=47,
    reduced_phys_bits=1,
)
SNP = HostAbilities(ready={"sev": True, "sev-es": True, "sev-snp": True}, why={}, cbitpos=51,
                    reduced_phys_bits=1)  # fmt: skip


def test_auto_picks_strongest() -> None:
    assert choose(Config(), SNP).mode == "sev-snp"
    plan = choose(Config(), SEV_ES)
    assert plan.mode == "sev-es" and plan.cbitpos == 47 and plan.policy & 0x4
    assert choose(Config(sev_policy=0x5), SEV_ES.__class__(ready={"sev": True}, why={})).policy == 0x1


def test_auto_without_sev_runs_unencrypted_and_says_so() -> None:
    plan = choose(Config(), NO_SEV)
    assert plan.mode == "none" and not plan.encrypted
    assert "NOT encrypted" in plan.reason and "CPU has no SEV" in plan.reason
    assert plan.annotations()["sevbox.launch-security.effective"] == "none"


@pytest.mark.parametrize(
    "config, host, needle",
    [
        (Config(require_encryption=True), NO_SEV, "encryption is required"),
        (Config(launch_security="sev"), NO_SEV, "sev is not available on this host: CPU has no SEV"),
        (Config(launch_security="sev-snp"), SEV_ES, "kvm_amd.sev_snp is N"),
        (Config(launch_security="none", require_encryption=True), SNP, "refusing to run unencrypted"),
    ],
)
def test_fails_closed(config: Config, host: HostAbilities, needle: str) -> None:
    with pytest.raises(EncryptionUnavailable, match=needle) as err:
        choose(config, host)
    assert "sevbox check" in str(err.value) or "none" in str(err.value)


def test_explicit_modes_and_policies() -> None:
    assert choose(Config(launch_security="sev"), SNP).policy == 0x1
    assert choose(Config(launch_security="sev-es"), SNP).policy == 0x5
    assert choose(Config(launch_security="sev-snp", snp_policy=0x30000), SNP).policy == 0x30000
    assert choose(Config(launch_security="none"), SNP).mode == "none"
