"""``sevbox ghcb decode`` through the real command-line frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevbox.cli import main
from sevbox.cli.ghcb import parse_value
from sevbox.errors import UsageError
from sevbox.sev.ghcb import Ghcb


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ghcb", "decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x1004", 0x1004),
        ("0X1004", 0x1004),
        ("8000000000000004", 0x8000_0000_0000_0004),  # 16 bare digits: trace style, hex
        ("c0010130", 0xC001_0130),
        ("4100", 4100),
        ("0x_ffff", 0xFFFF),
    ],
)
def test_parse_value(text: str, value: int) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ["", "0x", "zz", "-1", "0x1" + "0" * 16])
def test_parse_value_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_value(text)


def test_decode_value_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "0x0002000133000001")
    assert code == 0
    assert "SEV information response" in out and "position 51" in out and "1..2" in out
    code, out, _ = run(capsys, "0x31100", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["kind"] == "TerminationRequest"
    assert doc["fields"] == {"reason_set": 1, "reason_code": 3}
    assert any("VMPL 0" in line["text"] for line in doc["explain"])


def page_file(tmp_path: Path, name: str, page: Ghcb, *, hex_text: bool = False) -> str:
    path = tmp_path / name
    if hex_text:
        path.write_text(page.encode().hex(" ", 16).replace(" ", "\n", 3))
    else:
        path.write_bytes(page.encode())
    return str(path)


def test_decode_page_flags_missing_state(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = Ghcb.build(valid={"sw_exit_code": 0x72, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rax": 0xD})
    code, out, _ = run(capsys, "--page", page_file(tmp_path, "bad.bin", bad))
    assert code == 1
    assert "CPUID" in out and "ERROR" in out and "RCX" in out and "XCR0" in out
    good = Ghcb.build(
        valid={"sw_exit_code": 0x72, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rax": 1, "rcx": 0}
    )
    code, out, _ = run(capsys, "--page", page_file(tmp_path, "good.txt", good, hex_text=True), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert doc["event"]["name"] == "CPUID"
    assert doc["valid"]["rax"] == "0x1"


def test_decode_response_with_request(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    req = Ghcb.build(valid={"sw_exit_code": 0x7C, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rcx": 0x10})
    resp = Ghcb.build(valid={"sw_exit_code": 0x7C, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rax": 1})
    argv = ["--page", page_file(tmp_path, "r.bin", resp), "--response"]
    code, out, _ = run(capsys, *argv, "--request-page", page_file(tmp_path, "q.bin", req))
    assert code == 1 and "RDX" in out


def test_decode_event(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--event", "0x7c")
    assert code == 0 and "MSR" in out and "RCX" in out and "write" in out
    code, out, _ = run(capsys, "--event", "0x80000010", "--json")
    doc = json.loads(out)
    assert doc["name"] == "SNP page state change" and "SW_SCRATCH" in doc["inputs"]
    code, _, err = run(capsys, "--event", "0x99")
    assert code == 2 and "not an NAE event" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["0x1", "--page", "x"],
        ["0x1", "--event", "0x72"],
        ["0x1", "--response"],
        ["--event", "0x72", "--gpa", "0x1000"],
        ["--page", "x", "--request-page", "y"],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", bytes(100), b"zz" * 4096, bytes(4097)])
def test_bad_pages_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "p.bin"
    path.write_bytes(content)
    code, out, err = run(capsys, "--page", str(path))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "GHCB page" in err


def test_missing_page_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--page", str(tmp_path / "nope"))
    assert code == 1 and "cannot read" in err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ghcb", "decode", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--page" in out and "GHCB" in out
