"""`sevbox attest expected | measurement | inject`.

``expected`` runs in-process with the real guest image (cached) and AmdSev firmware made from the
suffix in tests/data/measure. ``measurement`` and ``inject`` run against created containers whose
sandbox is the FAKE local sandbox (tests/fakes/localsandbox.py) answering QMP from a FAKE table
(FakeQmpTable): first as this host's real QEMU answers (SEV not enabled), then as an SEV guest's.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sevbox.cli import main
from sevbox.sev import measure as M

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "measure"
TIK = (DATA / "tik1.bin").read_bytes()
# What QEMU 10.0.2 (this host, TCG, no SEV) answers; captured with qemu-system-x86_64 -M q35 -qmp stdio
REAL_QEMU_NO_SEV: dict[str, Any] = {
    "replies": {
        "query-sev": {"enabled": False, "api-minor": 0, "handle": 0, "state": "uninit", "api-major": 0,
                      "sev-type": "sev", "build-id": 0, "policy": 0},
        "query-status": {"running": True, "singlestep": False, "status": "running"},
    },
    "errors": {
        "query-sev-launch-measure": "SEV launch measurement is not available",
        "sev-inject-launch-secret": "SEV not enabled for guest",
    },
}  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def firmware(tmp_path: Path) -> dict[str, Path]:
    rng = random.Random(11)
    amd, plain = tmp_path / "OVMF.amdsev.fd", tmp_path / "OVMF_CODE.fd"
    amd.write_bytes(rng.randbytes(4096 * 3) + (DATA / "ovmf_AmdSev_suffix.bin").read_bytes())
    plain.write_bytes(rng.randbytes(4096 * 3) + (DATA / "ovmf_OvmfX64_suffix.bin").read_bytes())
    return {"amdsev": amd, "plain": plain}


def _bundle(tmp: Path, name: str = "b", annotations: dict[str, str] | None = None) -> Path:
    b = tmp / name
    (b / "rootfs").mkdir(parents=True)
    config: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "process": {"args": ["sleep", "30"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"]},
        "root": {"path": "rootfs"},
        "annotations": annotations or {},
    }
    (b / "config.json").write_text(json.dumps(config))
    return b


def _config(tmp: Path, **values: Any) -> Path:
    p = tmp / f"config-{len(list(tmp.glob('config-*')))}.toml"
    p.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return p


# --- expected ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "measure_mode"), [("sev", "sev"), ("sev-es", "seves"), ("sev-snp", "snp")])
def test_expected_equals_attest_measure(
    mode: str,
    measure_mode: str,
    tmp_path: Path,
    firmware: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _config(tmp_path, vcpus=2, swiotlb_mib=32)
    b = _bundle(tmp_path)
    code, out, _ = run(capsys, "--config", str(cfg), "attest", "expected", "--bundle", str(b), "--mode", mode,
                       "--ovmf", str(firmware["amdsev"]), "--json")  # fmt: skip
    assert code == 0
    exp = json.loads(out)
    assert exp["vcpus"] == 2 and exp["vcpu_type"] == "EPYC-v4" and exp["kernel_hashes"] is True
    assert "swiotlb=16384" in exp["cmdline"].split()
    assert exp["policy"] == {"sev": 0x1, "sev-es": 0x5, "sev-snp": 0x30000}[mode]
    code, out, _ = run(capsys, "attest", "measure", "--mode", measure_mode, "--ovmf", exp["firmware"],
                       "--kernel", exp["kernel"], "--initrd", exp["initrd"], "--append", exp["cmdline"],
                       "--vcpus", "2", "--vcpu-type", exp["vcpu_type"])  # fmt: skip
    assert code == 0 and out.strip() == exp["measurement"]
    # the human form carries the same digest and every input
    code, out, _ = run(capsys, "--config", str(cfg), "attest", "expected", "--bundle", str(b), "--mode", mode,
                       "--ovmf", str(firmware["amdsev"]))  # fmt: skip
    assert code == 0
    assert f"measurement:          {exp['measurement']}" in out
    for key in ("firmware_sha256", "kernel_sha256", "initrd_sha256", "cmdline"):
        assert exp[key] in out


def test_expected_refuses_firmware_without_hashes_table(
    tmp_path: Path, firmware: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, ovmf=str(firmware["plain"]))
    code, out, err = run(
        capsys,
        "--config",
        str(cfg),
        "attest",
        "expected",
        "--bundle",
        str(_bundle(tmp_path)),
        "--mode",
        "sev-snp",
    )
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert "would NOT be measured" in err and "--ovmf PATH" in err and str(firmware["plain"]) in err


def test_expected_unencrypted_launch_needs_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, launch_security="none")
    code, _, err = run(capsys, "--config", str(cfg), "attest", "expected", "--bundle", str(_bundle(tmp_path)))
    assert code == 2 and "without memory encryption" in err and "--mode" in err


def test_expected_mode_from_bundle_annotation(
    tmp_path: Path, firmware: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, ovmf=str(firmware["amdsev"]))
    annotated = _bundle(tmp_path, "a", {"sevbox.launch-security": "sev-es"})
    code, out, _ = run(
        capsys, "--config", str(cfg), "attest", "expected", "--bundle", str(annotated), "--json"
    )
    assert code == 0 and json.loads(out)["mode"] == "sev-es"
    code, out2, _ = run(
        capsys,
        "--config",
        str(cfg),
        "attest",
        "expected",
        "--bundle",
        str(_bundle(tmp_path)),
        "--mode",
        "sev-es",
        "--json",
    )
    assert json.loads(out2)["measurement"] == json.loads(out)["measurement"]


def test_expected_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "attest", "expected")[0] == 2
    code, _, err = run(capsys, "attest", "expected", "--bundle", str(tmp_path / "nope"), "--mode", "sev")
    assert code == 1 and "Traceback" not in err and err.startswith("sevbox: ")
    code, _, err = run(capsys, "attest", "expected", "--bundle", str(_bundle(tmp_path)), "--mode", "sev",
                       "--ovmf", str(tmp_path / "missing.fd"))  # fmt: skip
    assert code == 1 and "does not exist" in err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for verb, words in (("expected", ("--bundle", "--mode", "AmdSev")), ("measurement", ("validate",)),
                        ("inject", ("--header", "--payload", "cont"))):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["attest", verb, "--help"])
        out = capsys.readouterr().out
        assert all(w in out for w in words), verb


# --- measurement / inject, with created containers (FAKE sandbox, FAKE QMP table) ---------------


@dataclass
class Rt:
    root: Path
    tmp: Path
    env: dict[str, str]
    table: Path

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", "stdout" not in kw)
        return subprocess.run([sys.executable, "-m", "sevbox", "--root", str(self.root), *args],
                              env=self.env, text=True, timeout=60, check=False, **kw)  # fmt: skip

    def answers(self, table: dict[str, Any]) -> None:
        self.table.write_text(json.dumps(table))

    def commands(self) -> list[str]:
        log = Path(f"{self.table}.log")
        return [json.loads(line)["execute"] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Rt]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as containerd's shim (and the runtime harness)
    env = dict(os.environ)
    env["SEVBOX_TEST_SANDBOX"] = "tests.fakes.localsandbox:LocalSandbox"
    env["SEVBOX_TEST_FAKE_QMP"] = str(tmp_path / "qmp.json")
    env["PYTHONPATH"] = str(ROOT)
    r = Rt(root=tmp_path / "root", tmp=tmp_path, env=env, table=tmp_path / "qmp.json")
    r.answers(REAL_QEMU_NO_SEV)
    cfg = _config(tmp_path, launch_security="none")
    # the monitor keeps create's stdio (the container's): give it no pipe the test would wait on
    created = r.run(
        "--config",
        str(cfg),
        "create",
        "--bundle",
        str(_bundle(tmp_path)),
        "c1",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert created.returncode == 0
    yield r
    r.run("delete", "--force", "c1")


def _sev_guest(policy: int = 0x1, running: bool = False) -> dict[str, Any]:
    return {
        "replies": {
            "query-sev": {"enabled": True, "api-major": 1, "api-minor": 55, "build-id": 21, "policy": policy,
                          "state": "launch-secret", "handle": 1, "sev-type": "sev"},
            "query-status": {"running": running, "singlestep": False, "status": "prelaunch"},
        },
        "errors": {},
    }  # fmt: skip


def test_measurement_on_this_host_is_one_clear_line(rt: Rt) -> None:
    r = rt.run("attest", "measurement", "c1")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "runs without SEV" in r.stderr and "launch security none" in r.stderr
    assert rt.commands() == ["query-sev"]


def test_measurement_error_from_qemu_is_one_line(rt: Rt) -> None:
    table = _sev_guest()
    table["errors"]["query-sev-launch-measure"] = "SEV launch measurement is not available"
    rt.answers(table)
    r = rt.run("attest", "measurement", "c1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "query-sev-launch-measure" in r.stderr and "SEV launch measurement is not available" in r.stderr


# the SEV-ES recipe the `attest expected` help gives for `attest validate`
EXTRA = {
    "sev": [],
    "sev-es": ["--num-cpus", "1", "--cpu-family", "23", "--cpu-model", "1", "--cpu-stepping", "2",
               "--vmsa-fpu", "current"],
}  # fmt: skip


@pytest.mark.parametrize(("mode", "policy"), [("sev", 0x1), ("sev-es", 0x5)])
def test_measurement_validates_end_to_end(rt: Rt, firmware: dict[str, Path], mode: str, policy: int) -> None:
    """expected digest -> (FAKE) QEMU reports the measurement of it -> measurement -> validate says OK."""
    b = _bundle(rt.tmp, "e")
    exp_run = rt.run(
        "attest", "expected", "--bundle", str(b), "--mode", mode, "--ovmf", str(firmware["amdsev"]), "--json"
    )
    assert exp_run.returncode == 0, exp_run.stderr
    exp = json.loads(exp_run.stdout)
    assert exp["policy"] == policy
    info = M.SevLaunchInfo(api_major=1, api_minor=55, build_id=21, policy=policy)
    mnonce = bytes(range(16))
    blob = M.launch_measurement(tik=TIK, info=info, digest=bytes.fromhex(exp["measurement"]), mnonce=mnonce)
    blob += mnonce  # QEMU reports MEASURE || MNONCE
    table = _sev_guest(policy)
    table["replies"]["query-sev-launch-measure"] = {"data": base64.b64encode(blob).decode()}
    rt.answers(table)
    r = rt.run("attest", "measurement", "c1", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["api_major"], got["api_minor"], got["build_id"], got["policy"]) == (1, 55, 21, policy)
    assert got["state"] == "launch-secret" and base64.b64decode(got["measurement"]) == blob
    tk = rt.tmp / "tk.bin"
    tk.write_bytes(bytes(16) + TIK)
    common = [*got["validate_args"], *EXTRA[mode], "--firmware", exp["firmware"], "--kernel", exp["kernel"],
              "--initrd", exp["initrd"], "--cmdline", exp["cmdline"], "--tk", str(tk)]  # fmt: skip
    ok = rt.run("attest", "validate", *common)
    assert ok.returncode == 0, ok.stderr
    bad = rt.run("attest", "validate", *common[:-8], "--kernel", exp["initrd"], *common[-6:])
    assert bad.returncode == 1
    text = rt.run("attest", "measurement", "c1", "--validate-args")
    assert text.stdout.split() == got["validate_args"]


def test_inject_then_cont(rt: Rt) -> None:
    header, payload = rt.tmp / "hdr.bin", rt.tmp / "payload.bin"
    header.write_bytes(bytes(range(52)))
    payload.write_bytes(bytes(64))
    rt.answers({**_sev_guest(), "replies": {**_sev_guest()["replies"], "sev-inject-launch-secret": {}}})
    r = rt.run(
        "attest", "inject", "c1", "--header", str(header), "--payload", str(payload), "--gpa", "0x800000"
    )
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout
    assert rt.commands() == ["query-sev", "sev-inject-launch-secret", "query-status", "cont"]
    sent = [json.loads(line) for line in Path(f"{rt.table}.log").read_text().splitlines()][1]["arguments"]
    assert base64.b64decode(sent["packet-header"]) == bytes(range(52)) and sent["gpa"] == 0x800000
    # base64 files (attest secret --base64); the VM already runs: no cont
    header.write_text(base64.b64encode(bytes(52)).decode())
    payload.write_text(base64.b64encode(bytes(32)).decode() + "\n")
    r = rt.run(
        "attest", "inject", "c1", "--header", str(header), "--payload", str(payload), "--base64", "--json"
    )
    assert r.returncode == 0 and json.loads(r.stdout) == {"injected": True, "resumed": False}


def test_inject_refusals(rt: Rt) -> None:
    header, payload = rt.tmp / "hdr.bin", rt.tmp / "payload.bin"
    header.write_bytes(bytes(52))
    payload.write_bytes(bytes(32))
    r = rt.run("attest", "inject", "c1", "--header", str(header), "--payload", str(payload))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "runs without SEV" in r.stderr
    table = _sev_guest()
    table["errors"]["sev-inject-launch-secret"] = "SEV not enabled for guest"
    rt.answers(table)
    r = rt.run("attest", "inject", "c1", "--header", str(header), "--payload", str(payload))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "SEV not enabled for guest" in r.stderr
    header.write_bytes(bytes(51))  # truncated header: refused before the packet is sent
    before = len(rt.commands())
    r = rt.run("attest", "inject", "c1", "--header", str(header), "--payload", str(payload))
    assert r.returncode == 1 and "51 bytes, expected 52" in r.stderr
    assert rt.commands()[before:] == ["query-sev"]
    r = rt.run("attest", "inject", "c1", "--header", str(payload), "--payload", str(payload), "--base64")
    assert r.returncode == 2 and "not base64" in r.stderr


def test_expected_for_a_created_container(rt: Rt, firmware: dict[str, Path]) -> None:
    r = rt.run("attest", "expected", "c1")
    assert r.returncode == 2 and "without memory encryption" in r.stderr  # it was created with 'none'
    by_id = rt.run(
        "attest", "expected", "c1", "--mode", "sev-snp", "--ovmf", str(firmware["amdsev"]), "--json"
    )
    by_bundle = rt.run("attest", "expected", "--bundle", str(rt.tmp / "b"), "--mode", "sev-snp",
                       "--ovmf", str(firmware["amdsev"]), "--json")  # fmt: skip
    assert by_id.returncode == 0, by_id.stderr
    assert json.loads(by_id.stdout)["measurement"] == json.loads(by_bundle.stdout)["measurement"]
    assert rt.run("attest", "measurement", "nosuch").returncode == 1
