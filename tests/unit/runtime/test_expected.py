"""sevbox.runtime.expected: the digest of exactly what vmplan launches, cross-checked.

Firmware images are random pages in front of the AmdSev / OvmfX64 4 KiB suffixes (tests/data/measure,
see its PROVENANCE.md), as tests/peers/test_measure_peers.py builds them.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sevbox.cli import main
from sevbox.config import Config
from sevbox.errors import ConfigError, FormatError, UsageError
from sevbox.runtime import expected as E
from sevbox.runtime.vmplan import SEV_CPU_MODEL, sandbox_args

DATA = Path(__file__).resolve().parents[2] / "data" / "measure"
AMDSEV = (DATA / "ovmf_AmdSev_suffix.bin").read_bytes()
OVMFX64 = (DATA / "ovmf_OvmfX64_suffix.bin").read_bytes()
MODES = ("sev", "sev-es", "sev-snp")
MEASURE_MODE = {"sev": "sev", "sev-es": "seves", "sev-snp": "snp"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = random.Random(7)
    out = {
        "ovmf": tmp_path / "OVMF.amdsev.fd",
        "plain": tmp_path / "OVMF_CODE.fd",
        "kernel": tmp_path / "bzImage",
        "initrd": tmp_path / "initrd.img",
    }
    out["ovmf"].write_bytes(rng.randbytes(4096 * 5) + AMDSEV)
    out["plain"].write_bytes(rng.randbytes(4096 * 5) + OVMFX64)
    out["kernel"].write_bytes(rng.randbytes(50_000))
    out["initrd"].write_bytes(rng.randbytes(30_001))
    return out


def _inputs(mode: str, config: Config, files: dict[str, Path]) -> E.LaunchInputs:
    plan = E.what_if_plan(mode, config)
    return E.launch_inputs(
        plan, config, firmware=Path(config.ovmf), has_hashes_table=True,
        kernel=files["kernel"], initrd=files["initrd"],
    )  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_inputs_are_what_sandbox_args_launches(mode: str, files: dict[str, Path]) -> None:
    config = Config(ovmf=str(files["ovmf"]), vcpus=3, swiotlb_mib=16)
    plan = E.what_if_plan(mode, config)
    inputs = _inputs(mode, config, files)
    args = sandbox_args(plan, config)
    over = args["spec_overrides"]
    assert inputs.cmdline == over["cmdline"]
    assert "swiotlb=8192" in inputs.cmdline.split()
    assert inputs.cpu == over["cpu"] == SEV_CPU_MODEL
    assert inputs.firmware == args["firmware"]
    assert inputs.vcpus == args["vcpus"] == 3
    policy = next(o for o in over["objects"] if o.startswith(("sev-guest", "sev-snp-guest")))
    assert f"policy={inputs.policy:#x}" in policy.split(",")
    assert "kernel-hashes=on" in policy.split(",")


def test_policy_per_mode() -> None:
    config = Config(sev_policy=0x1, snp_policy=0x30000)
    assert E.what_if_plan("sev", config).policy == 0x1
    assert E.what_if_plan("sev-es", config).policy == 0x5
    assert E.what_if_plan("sev-snp", config).policy == 0x30000
    with pytest.raises(UsageError):
        E.what_if_plan("none", config)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("vcpus", [1, 4])
def test_digest_equals_attest_measure(
    mode: str, vcpus: int, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config(ovmf=str(files["ovmf"]), vcpus=vcpus)
    inputs = _inputs(mode, config, files)
    exp = E.compute(inputs)
    argv = ["attest", "measure", "--mode", MEASURE_MODE[mode], "--ovmf", str(files["ovmf"]),
            "--kernel", str(files["kernel"]), "--initrd", str(files["initrd"]), "--append", inputs.cmdline,
            "--vcpus", str(vcpus), "--vcpu-type", inputs.cpu]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == exp.digest.hex()
    assert len(exp.digest) == (48 if mode == "sev-snp" else 32)
    assert exp.kernel_sha256 == hashlib.sha256(files["kernel"].read_bytes()).digest()
    assert exp.initrd_sha256 == hashlib.sha256(files["initrd"].read_bytes()).digest()
    assert exp.firmware_sha256 == hashlib.sha256(files["ovmf"].read_bytes()).digest()


@pytest.mark.peers
@pytest.mark.parametrize("mode", MODES)
def test_digest_equals_peer_sev_snp_measure(mode: str, files: dict[str, Path]) -> None:
    config = Config(ovmf=str(files["ovmf"]), vcpus=2)
    inputs = _inputs(mode, config, files)
    peer = Path(sys.executable).parent / "sev-snp-measure"
    r = subprocess.run(
        [str(peer), "--mode", MEASURE_MODE[mode], "--ovmf", str(files["ovmf"]),
         "--kernel", str(files["kernel"]), "--initrd", str(files["initrd"]),
         "--append", inputs.cmdline, "--vcpus", "2",
         "--vcpu-type", inputs.cpu],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert r.stdout.strip() == E.compute(inputs).digest.hex()


def test_every_input_changes_the_digest(files: dict[str, Path]) -> None:
    config = Config(ovmf=str(files["ovmf"]), vcpus=2)
    base = _inputs("sev-es", config, files)
    d0 = E.compute(base).digest
    other = files["kernel"].with_name("other")
    other.write_bytes(files["kernel"].read_bytes() + b"\0")
    variants = [
        replace(base, vcpus=3),
        replace(base, cmdline=base.cmdline + " x"),
        replace(base, cpu="EPYC-Milan"),
        replace(base, kernel=other),
        replace(base, initrd=other),
    ]
    digests = {E.compute(v).digest for v in variants}
    assert d0 not in digests and len(digests) == len(variants)
    assert _inputs("sev", config, files).vcpus == 2  # SEV: no VMSAs, vCPUs are not measured
    assert (
        E.compute(replace(_inputs("sev", config, files), vcpus=5)).digest
        == E.compute(_inputs("sev", config, files)).digest
    )


def test_firmware_without_hashes_table_is_refused(files: dict[str, Path]) -> None:
    config = Config(ovmf=str(files["plain"]))
    inputs = _inputs("sev", config, files)
    with pytest.raises(ConfigError, match="would NOT be measured") as err:
        E.compute(inputs)
    assert "--ovmf PATH" in str(err.value)
    # secure_vm leaves kernel-hashes off for such firmware: also refused
    plan = E.what_if_plan("sev", config)
    no_table = E.launch_inputs(plan, config, firmware=files["plain"], has_hashes_table=False,
                               kernel=files["kernel"], initrd=files["initrd"])  # fmt: skip
    assert not no_table.kernel_hashes
    with pytest.raises(ConfigError, match="NOT be measured"):
        E.compute(no_table)


@pytest.mark.parametrize("cut", [1, 100, 4096])
def test_truncated_firmware_is_refused(files: dict[str, Path], cut: int) -> None:
    data = files["ovmf"].read_bytes()
    files["ovmf"].write_bytes(data[:-cut])  # the footer table is gone: no hashes table either
    with pytest.raises(ConfigError, match="no SEV kernel hashes table"):
        E.compute(_inputs("sev-snp", Config(ovmf=str(files["ovmf"])), files))


def test_tampered_footer_table_is_a_format_error(files: dict[str, Path]) -> None:
    data = bytearray(files["ovmf"].read_bytes())
    data[-50] ^= 0xFF  # the footer table's length
    files["ovmf"].write_bytes(bytes(data))
    with pytest.raises(FormatError, match="footer table"):
        E.compute(_inputs("sev-es", Config(ovmf=str(files["ovmf"])), files))


def test_missing_kernel_is_a_clear_error(files: dict[str, Path]) -> None:
    inputs = replace(
        _inputs("sev", Config(ovmf=str(files["ovmf"])), files), kernel=files["kernel"].with_name("gone")
    )
    with pytest.raises(ConfigError, match="cannot read the kernel"):
        E.compute(inputs)
