"""`sevbox attest measure | validate | id-block`: options, output, exit codes (in-process)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sevbox.cli import main
from sevbox.sev import idblock as I

DATA = Path(__file__).resolve().parents[2] / "data" / "measure"
AMDSEV = str(DATA / "ovmf_AmdSev_suffix.bin")
OVMFX64 = str(DATA / "ovmf_OvmfX64_suffix.bin")
SEVCTL = str(DATA / "ovmf_sevctl_amdsev_trimmed.bin")
TIK = str(DATA / "tik1.bin")
SNP_1 = "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["attest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_measure_snp(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "measure",
        "--mode",
        "snp",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
        "--ovmf",
        AMDSEV,
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--append",
        "console=ttyS0 loglevel=7",
    )
    assert (code, out) == (0, SNP_1 + "\n")
    # the same vCPU given three other ways
    for how in (
        ["--vcpu-sig", "0x800f12"],
        ["--vcpu-family", "23", "--vcpu-model", "1", "--vcpu-stepping", "2"],
    ):
        code, out, _ = run(
            capsys,
            "measure",
            "--mode",
            "snp",
            "--vcpus",
            "1",
            *how,
            "--ovmf",
            AMDSEV,
            "--kernel",
            "/dev/null",
            "--initrd",
            "/dev/null",
            "--append",
            "console=ttyS0 loglevel=7",
            "--output-format",
            "base64",
        )
        assert base64.b64decode(out).hex() == SNP_1


def test_measure_json_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "measure",
        "--mode",
        "seves",
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-v4",
        "--ovmf",
        AMDSEV,
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["mode"] == "seves" and doc["vcpus"] == 4
    assert doc["measurement"] == "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"
    code, out, _ = run(capsys, "measure", "--mode", "sev", "--ovmf", OVMFX64, "-v")
    assert out == (
        "Calculated SEV guest measurement: b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da\n"
    )


def test_measure_ovmf_hash_and_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "measure", "--mode", "snp:ovmf-hash", "--ovmf", AMDSEV)
    seed = out.strip()
    assert code == 0 and len(seed) == 96
    assert run(capsys, "measure", "--mode", "snp:ovmf-hash", "--ovmf", AMDSEV, "-v")[1] == out  # as the peer
    code, out, _ = run(
        capsys,
        "measure",
        "--mode",
        "snp",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
        "--ovmf",
        AMDSEV,
        "--snp-ovmf-hash",
        seed,
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--append",
        "console=ttyS0 loglevel=7",
    )
    assert out.strip() == SNP_1


def test_measure_dump_vmsa(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(
        capsys,
        "measure",
        "--mode",
        "snp",
        "--vcpus",
        "3",
        "--vcpu-type",
        "EPYC-Milan",
        "--ovmf",
        AMDSEV,
        "--dump-vmsa",
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vmsa0.bin", "vmsa1.bin", "vmsa2.bin"]
    assert (tmp_path / "vmsa1.bin").read_bytes() == (tmp_path / "vmsa2.bin").read_bytes()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            [
                "--mode",
                "snp",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC",
                "--ovmf",
                OVMFX64,
                "--kernel",
                "/dev/null",
            ],
            1,
            "cannot be measured",
        ),
        (["--mode", "sev", "--ovmf", OVMFX64, "--kernel", "/dev/null"], 1, "no SEV hashes table"),
        (["--mode", "snp", "--vcpus", "1", "--ovmf", AMDSEV], 2, "missing --vcpu-type"),
        (["--mode", "snp", "--vcpu-type", "EPYC", "--ovmf", AMDSEV], 2, "missing --vcpus"),
        (["--mode", "sev", "--ovmf", AMDSEV, "--initrd", "/dev/null"], 2, "--kernel required"),
        (["--mode", "sev", "--ovmf", AMDSEV, "--dump-vmsa"], 2, "--dump-vmsa"),
        (["--mode", "sev", "--ovmf", AMDSEV, "--snp-ovmf-hash", "00"], 2, "only works"),
        (
            ["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", AMDSEV, "--vmm-type", "xen"],
            2,
            "unknown VMM type",
        ),
        (["--mode", "sev", "--ovmf", "/nonexistent/ovmf.fd"], 2, "cannot read --ovmf"),
        (["--mode", "snp", "--vcpus", "1", "--vcpu-family", "25", "--ovmf", AMDSEV], 2, "--vcpu-model"),
    ],
)
def test_measure_errors(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str) -> None:
    got, out, err = run(capsys, "measure", *argv)
    assert got == code and out == ""
    assert err.startswith("sevbox: ") and message in err and len(err.strip().splitlines()) == 1


SEVES_BLOB = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"
SEVES = [
    "validate",
    "--tik",
    TIK,
    "--tek",
    TIK,
    "--firmware",
    SEVCTL,
    "--api-major",
    "1",
    "--api-minor",
    "49",
    "--build-id",
    "6",
    "--policy",
    "5",
    "--num-cpus",
    "4",
]
SKU = ["--cpu-family", "25", "--cpu-model", "1", "--cpu-stepping", "1"]


def test_validate_real_seves_capture(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SEVES, *SKU, "--measurement", SEVES_BLOB)
    assert (code, out) == (0, "OK: Looks good to me\n")
    code, _, err = run(capsys, *SEVES, *SKU, "--measurement", SEVES_BLOB, "--vmsa-fpu", "current")
    assert code == 1 and "does not match" in err
    vmsas = ["--vmsa-cpu0", str(DATA / "vmsa0.bin"), "--vmsa-cpu1", str(DATA / "vmsa1.bin")]
    code, out, _ = run(capsys, *SEVES, *vmsas, "--measurement", SEVES_BLOB, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["sev_es"] and doc["exit_code"] == 0


def test_validate_sev_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "validate",
        "--tik",
        TIK,
        "--tek",
        TIK,
        "--firmware",
        SEVCTL,
        "--api-major",
        "1",
        "--api-minor",
        "40",
        "--build-id",
        "40",
        "--policy",
        "3",
        "--kernel",
        str(DATA / "vmlinuz-fake"),
        "--initrd",
        str(DATA / "initrd-fake"),
        "--cmdline",
        "foo bar baz fake kernel=cmdline",
        "--measurement",
    ]
    good = "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    assert run(capsys, *argv, good)[0] == 0
    raw = bytearray(base64.b64decode(good))
    raw[5] ^= 1
    bad = base64.b64encode(bytes(raw)).decode()
    assert run(capsys, *argv, bad)[0] == 1
    assert run(capsys, *argv, good, "-q") == (0, "", "")
    assert run(capsys, *argv[:-3], "--measurement", good)[0] == 1  # without the command line


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--measurement", SEVES_BLOB], 2),  # SEV-ES without a VMSA source
        (["--measurement", SEVES_BLOB, "--cpu-family", "25"], 2),
        (["--measurement", SEVES_BLOB, *SKU, "--vmsa-cpu0", TIK], 2),
        (["--measurement", SEVES_BLOB, "--vmsa-cpu0", TIK], 2),  # a VMSA must be 4096 bytes
        (["--measurement", "!!notbase64", *SKU], 6),
        (["--measurement", "AAAA", *SKU], 1),
        (["--measurement", SEVES_BLOB, *SKU, "--tk", TIK], 2),
        (["--measurement", SEVES_BLOB, *SKU, "--domain", "vm1"], 2),
        (["--measurement", SEVES_BLOB, *SKU, "--inject-secret", "luks-key:/dev/null"], 2),
    ],
)
def test_validate_exit_codes(capsys: pytest.CaptureFixture[str], extra: list[str], code: int) -> None:
    assert run(capsys, *SEVES, *extra)[0] == code


def test_validate_missing_tik(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "--firmware", SEVCTL, "--measurement", SEVES_BLOB)
    assert code == 2 and "--tk" in err


def test_id_block(capsys: pytest.CaptureFixture[str]) -> None:
    ld = base64.b64encode(bytes(range(48))).decode()
    keys = ["--idkey", str(DATA / "id_key_test.pem"), "--authorkey", str(DATA / "author_key_test.pem")]
    code, out, _ = run(capsys, "id-block", "--measurement", ld, *keys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    block_b64, auth_b64 = lines[0].removeprefix("id-block=").split(",id-auth=")
    block, auth = base64.b64decode(block_b64), base64.b64decode(auth_b64)
    assert block[:48] == bytes(range(48))
    id_digest, author_digest = I.verify_id_auth(block, auth)
    assert lines[1] == "id_key_hash: hwt+NcU/inLQ0yL3WrKvgmJ5Kq9leWIs5BMcPyHyied8sFYKXjuQs5MuZ07HCcsU"
    assert base64.b64encode(id_digest).decode() in lines[1]
    assert lines[2] == f"author_key: {base64.b64encode(author_digest or b'').decode()}"
    code, out, _ = run(capsys, "id-block", "--measurement", ld, *keys, "--json", "--policy", "0x30001")
    doc = json.loads(out)
    assert base64.b64decode(doc["id_block"])[88:96] == (0x30001).to_bytes(8, "little")
    assert run(capsys, "id-block", "--measurement", ld)[0] == 2
    assert run(capsys, "id-block", "--measurement", "AAAA", *keys)[0] == 2
    assert run(capsys, "id-block", "--measurement", ld, "--idkey", TIK, keys[2], keys[3])[0] == 1
