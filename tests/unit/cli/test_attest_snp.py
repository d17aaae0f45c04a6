"""``sevbox attest report show|verify`` and ``sevbox attest fetch ca|vcek|crl``, in process."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.sev import snpkit

from sevbox.cli import main

DATA = snpkit.DATA
VIRTEE_REPORT = str(DATA / "virtee_milan_report.hex")
VIRTEE_VCEK = str(DATA / "virtee_milan_vcek.der")
GSG_REPORT = str(DATA / "gsg_milan_report.bin")
GSG_VCEK = str(DATA / "gsg_milan_vcek.der")
MEASUREMENT = (
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_raw_and_hex(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "attest", "report", "show", GSG_REPORT)
    assert code == 0
    assert "NOT verified" in out
    assert "policy             0xb0000" in out and "DEBUG: bit 19 = 1" in out
    assert "firmware 1.49 build 3" in out
    assert "reserved_0x1f8" in out and "reserved_0x330" in out
    code, out, _ = run(capsys, "attest", "report", "show", VIRTEE_REPORT, "--json")
    js = json.loads(out)
    assert code == 0 and js["verified"] is False
    assert js["measurement"] == MEASUREMENT
    assert js["reported_tcb"] == {
        "raw": "0300000000000873",
        "layout": "milan",
        "bootloader": 3,
        "tee": 0,
        "snp": 8,
        "microcode": 115,
    }


def test_show_v5_turin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tcb = snpkit.tcb_bytes(fmc=1, bl=2, tee=3, snp=4, ucode=9, turin=True)
    f = tmp_path / "r.bin"
    f.write_bytes(snpkit.report(version=5, cpuid=(0x1A, 0x02, 0x01), tcb=tcb))
    code, out, _ = run(capsys, "attest", "report", "show", str(f))
    assert code == 0
    assert re.search(r"cpuid_mod_id +2 \(Turin\)", out)
    assert "fmc=1 bootloader=2 tee=3 snp=4 microcode=9" in out
    assert re.search(r"launch_mit_vector +0x3\n", out)


def test_verify_real_report_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK,
        "--measurement", MEASUREMENT, "--min-tcb", "bl=3,tee=0,snp=8,ucode=115", "--max-policy", "SMT",
        "--vmpl", "0",
    )  # fmt: skip
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("verified: all 16 checks hold (Milan, VCEK)")
    for line in out.splitlines()[:-1]:
        assert line.startswith("ok      ")


def test_verify_gsg_needs_allow_debug(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "attest", "report", "verify", GSG_REPORT, "--vcek", GSG_VCEK)
    assert code == 1
    assert "FAILED  debug" in out
    assert "first: debug" in err
    code, out, _ = run(
        capsys, "attest", "report", "verify", GSG_REPORT, "--vcek", GSG_VCEK, "--allow-debug",
        "--report-data", "0102030405", "--json",
    )  # fmt: skip
    js = json.loads(out)
    assert code == 0 and js["ok"] is True and js["product"] == "Milan"
    assert {c["check"] for c in js["checks"]} >= {"report signature", "TCB", "hwID", "report data"}
    assert js["report"]["verified"] is True and js["report"]["policy"] == "0xb0000"


def test_verify_tampered_report_names_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = bytearray(snpkit.virtee_report())
    raw[0x90] ^= 1  # measurement
    f = tmp_path / "bad.bin"
    f.write_bytes(bytes(raw))
    code, out, err = run(capsys, "attest", "report", "verify", str(f), "--vcek", VIRTEE_VCEK)
    assert code == 1
    assert "FAILED  report signature" in out
    assert "skipped TCB" in out
    assert "first: report signature" in err


def test_verify_with_explicit_chain(capsys: pytest.CaptureFixture[str]) -> None:
    chain = str(DATA / "virtee_cert_chain_turin.pem")
    code, out, _ = run(
        capsys, "attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--chain", chain
    )
    assert code == 1 and "FAILED  ASK -> VCEK" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["attest", "report", "show", "/nonexistent"], 2, "no such file"),
        (["attest", "report", "verify", VIRTEE_REPORT], 2, "--vcek"),
        (
            ["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--measurement", "zz"],
            2,
            "not hex",
        ),
        (
            ["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--measurement", "00"],
            2,
            "48 bytes",
        ),
        (["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--min-tcb", "x=1"], 2, "bl=N"),
        (
            ["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--max-policy", "0x1"],
            2,
            "bit 17",
        ),
        (["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_REPORT], 1, "VCEK/VLEK certificate"),
        (["attest", "report", "show", VIRTEE_VCEK], 1, "attestation report"),
        (
            ["attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK, "--product", "rome"],
            2,
            "invalid choice",
        ),
    ],
)
def test_bad_input_is_one_line_never_a_traceback(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, _, err = run(capsys, *args)
    assert got == code
    assert message in err
    assert "Traceback" not in err and "internal error" not in err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in (
        ["report", "show"],
        ["report", "verify"],
        ["fetch", "vcek"],
        ["fetch", "ca"],
        ["fetch", "crl"],
    ):
        with pytest.raises(SystemExit) as info:
            main(["attest", *sub, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out
    with pytest.raises(SystemExit):
        main(["attest", "report", "verify", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--measurement",
        "--report-data",
        "--host-data",
        "--max-policy",
        "--min-tcb",
        "--vmpl",
        "--chain",
    ):
        assert option in out


def test_report_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "attest", "report")
    assert code == 2 and "show" in err and "verify" in err


@pytest.fixture
def kds_root(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    root = tmp_path / "kds"
    (root / "vcek/v1/Milan").mkdir(parents=True)
    (root / "vcek/v1/Milan/cert_chain").write_bytes((DATA / "gsg_milan_cert_chain.pem").read_bytes())
    chip = snpkit.data("gsg_milan_report.bin")[0x1A0:0x1E0].hex()  # CHIP_ID of the go-sev-guest report
    (root / f"vcek/v1/Milan/{chip}").write_bytes((DATA / "gsg_milan_vcek.der").read_bytes())
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        t.join()


def test_fetch_ca_and_vcek(
    kds_root: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, seen = kds_root
    cache = str(tmp_path / "cache")
    out_file = tmp_path / "chain.pem"
    code, out, err = run(
        capsys, "attest", "fetch", "ca", "--product", "milan", "--url-base", base, "--cache-dir", cache,
        "--out", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    assert "fetched: " in out and "ARK-Milan" in out
    assert out_file.read_bytes() == (DATA / "gsg_milan_cert_chain.pem").read_bytes()
    code, out, _ = run(
        capsys,
        "attest",
        "fetch",
        "ca",
        "--product",
        "milan",
        "--url-base",
        base,
        "--cache-dir",
        cache,
        "--json",
    )
    js = json.loads(out)
    assert code == 0 and js["from_cache"] is True and seen == ["/vcek/v1/Milan/cert_chain"]
    vcek_file = tmp_path / "vcek.der"
    code, out, err = run(
        capsys, "attest", "fetch", "vcek", "--report", GSG_REPORT, "--product", "milan", "--url-base", base,
        "--cache-dir", cache, "--out", str(vcek_file),
    )  # fmt: skip
    assert code == 0, err
    assert seen[-1].endswith("?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68")
    assert vcek_file.read_bytes() == (DATA / "gsg_milan_vcek.der").read_bytes()
    # ...and the fetched VCEK verifies the report
    code, _, _ = run(
        capsys, "attest", "report", "verify", GSG_REPORT, "--vcek", str(vcek_file), "--allow-debug"
    )
    assert code == 0


def test_fetch_errors(
    kds_root: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = kds_root
    code, _, err = run(
        capsys, "attest", "fetch", "crl", "--product", "genoa", "--url-base", base, "--no-cache"
    )
    assert code == 1 and "HTTP 404" in err
    code, _, err = run(
        capsys, "attest", "fetch", "vcek", "--report", GSG_REPORT, "--url-base", base, "--no-cache"
    )
    assert code == 2 and "--product" in err
    code, _, err = run(capsys, "attest", "fetch", "vcek", "--product", "milan", "--chip-id", "00")
    assert code == 2 and "needs --report" in err
    code, _, err = run(capsys, "attest", "fetch", "ca", "--product", "milan", "--url-base", "ftp://x")
    assert code == 2 and "http://" in err


def test_subprocess_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sevbox", "attest", "report", "verify", VIRTEE_REPORT, "--vcek", VIRTEE_VCEK],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "verified: all" in r.stdout


def test_fetch_turin_vcek_by_chip_id_and_tcb(
    kds_root: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, seen = kds_root
    served = tmp_path / "kds" / "vcek/v1/Turin"  # the fixture serves tmp_path/kds
    served.mkdir(parents=True)
    (served / "1e550a8ee5cf9f4d").write_bytes((DATA / "virtee_turin_vcek.der").read_bytes())
    code, out, err = run(
        capsys, "attest", "fetch", "vcek", "--product", "turin", "--chip-id", "1e550a8ee5cf9f4d",
        "--tcb", "fmc=0,bl=0,tee=0,snp=0,ucode=9", "--url-base", base, "--no-cache", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert seen[-1] == "/vcek/v1/Turin/1e550a8ee5cf9f4d?fmcSPL=0&blSPL=0&teeSPL=0&snpSPL=0&ucodeSPL=9"
    assert json.loads(out)["tcb"] == "0000000000000009 (fmc=0 bootloader=0 tee=0 snp=0 microcode=9)"
