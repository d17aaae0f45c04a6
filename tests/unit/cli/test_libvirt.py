"""``sevbox libvirt xml`` / ``sevbox libvirt lint`` through the real command-line frame."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sevbox.cli import libvirt as cli_libvirt
from sevbox.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "libvirt"
BASE = ["libvirt", "xml", "--name", "web", "--memory", "1024", "--vcpus", "2", "--disk", "/srv/web.qcow2"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_host_sev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_libvirt, "_host_sev_params", lambda: None)


@pytest.mark.usefixtures("no_host_sev")
@pytest.mark.parametrize("mode", ["sev", "sev-es", "sev-snp"])
def test_xml_then_lint_is_clean(capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str) -> None:
    code, out, err = run(capsys, *BASE, "--launch-security", mode, "--network", "default")
    assert code == 0, err
    dom = ET.fromstring(out)
    assert dom.findtext("launchSecurity/cbitpos") == "51"
    assert "default cbitpos 51" in out
    path = tmp_path / "d.xml"
    path.write_text(out)
    code, out, err = run(capsys, "libvirt", "lint", str(path), "--strict")
    assert code == 0, out
    assert "0 error(s), 0 warning(s)" in out


def test_host_values_are_used_and_flags_override(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_libvirt, "_host_sev_params", lambda: (47, 5))
    code, out, _ = run(capsys, *BASE)
    assert code == 0
    dom = ET.fromstring(out)
    assert (dom.findtext("launchSecurity/cbitpos"), dom.findtext("launchSecurity/reducedPhysBits")) == (
        "47",
        "5",
    )
    assert "from this host" in out
    code, out, _ = run(capsys, *BASE, "--cbitpos", "51")
    dom = ET.fromstring(out)
    assert (dom.findtext("launchSecurity/cbitpos"), dom.findtext("launchSecurity/reducedPhysBits")) == (
        "51",
        "5",
    )


@pytest.mark.usefixtures("no_host_sev")
def test_attested_launch_from_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "godh.b64").write_text(base64.b64encode(bytes(0x824)).decode() + "\n")
    (tmp_path / "session.bin").write_bytes(bytes(range(0x80)))  # raw bytes are encoded for libvirt
    code, out, err = run(
        capsys,
        *BASE,
        "--launch-security",
        "sev-es",
        "--dh-cert",
        str(tmp_path / "godh.b64"),
        "--session",
        str(tmp_path / "session.bin"),
        "--locked-memory",
        "--policy",
        "NODBG,NOKS,ES,NOSEND",
        "-o",
        str(tmp_path / "out.xml"),
    )
    assert code == 0, err
    assert out == ""
    dom = ET.fromstring((tmp_path / "out.xml").read_text())
    assert dom.findtext("launchSecurity/policy") == "0x000f"
    assert base64.b64decode(dom.findtext("launchSecurity/session") or "") == bytes(range(0x80))
    assert dom.find("os/nvram") is None
    assert dom.find("memoryBacking/locked") is not None


@pytest.mark.usefixtures("no_host_sev")
def test_kernel_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--kernel", "/boot/vmlinuz", "--initrd", "/boot/initrd.img", "--cmdline", "console=ttyS0"]
    code, out, err = run(capsys, *BASE, *argv)
    assert code == 0, err
    dom = ET.fromstring(out)
    assert dom.find("launchSecurity").get("kernelHashes") == "yes"  # type: ignore[union-attr]
    assert dom.findtext("os/cmdline") == "console=ttyS0"


@pytest.mark.usefixtures("no_host_sev")
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--launch-security", "tdx"], "invalid choice"),
        (["--policy", "0x7"], "sev-es"),
        (["--policy", "FROB"], "unknown SEV policy name"),
        (["--hard-limit", "lots"], "--hard-limit"),
        (["--hard-limit", "10"], "256 MiB"),
        (["--locked-memory", "--hard-limit", "9999999"], "not allowed with"),
        (["--dh-cert", "/nonexistent"], "both --dh-cert and --session"),
        (["--dh-cert", "/nonexistent", "--session", "/nonexistent"], "cannot read --dh-cert"),
        (["--cbitpos", "99"], "cbitpos"),
        (["--name", "a/b"], "domain name"),
    ],
)
def test_xml_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run(capsys, *BASE, *extra)
    assert code in (1, 2)
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_snp_policy_names(capsys: pytest.CaptureFixture[str], no_host_sev: None) -> None:
    code, out, err = run(capsys, *BASE, "--launch-security", "sev-snp", "--policy", "SMT,SINGLE_SOCKET")
    assert code == 0
    dom = ET.fromstring(out)
    assert dom.findtext("launchSecurity/policy") == "0x00130000"
    assert dom.findtext("os/loader") == "/usr/share/ovmf/OVMF.fd"
    assert "warning" in err and "--firmware" in err
    code, out, err = run(capsys, *BASE, "--launch-security", "sev-snp", "--firmware", "/opt/amdsev.fd")
    assert code == 0 and err == ""
    assert ET.fromstring(out).findtext("os/loader") == "/opt/amdsev.fd"


def test_lint_reports_findings_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    q35 = str(DATA / "guide-q35.xml")
    code, out, _ = run(capsys, "libvirt", "lint", q35, "--no-schema")
    assert code == 1
    assert "virtio-net-rom" in out and "/domain/devices/interface" in out and "fix:" in out
    code, out, _ = run(capsys, "libvirt", "lint", q35, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert {f["rule"] for f in doc["findings"]} == {"virtio-net-rom", "schema"}
    assert doc["schema"]["checked"] is True and doc["schema"]["ok"] is False
    assert set(doc["findings"][0]) == {"rule", "severity", "path", "message", "fix"}


@pytest.mark.usefixtures("no_host_sev")
def test_warnings_fail_only_with_strict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, out, _ = run(capsys, *BASE, "--policy", "0x2")  # NOKS only: debugging allowed -> warning
    path = tmp_path / "debug.xml"
    path.write_text(out)
    code, out, _ = run(capsys, "libvirt", "lint", str(path))
    assert code == 0 and "policy-debug" in out
    code, _, _ = run(capsys, "libvirt", "lint", str(path), "--strict")
    assert code == 1


def test_lint_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    data = (DATA / "guide-i440fx.xml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run(capsys, "libvirt", "lint", "-", "--no-schema", "--json")
    assert code == 1
    assert json.loads(out)["warnings"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"<domain", "well-formed"), (b"\x00\x01binary", "well-formed")],
)
def test_lint_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "in.xml"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "libvirt", "lint", str(path))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("xml", "lint"):
        with pytest.raises(SystemExit) as exc:
            main(["libvirt", sub, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out
    code, _, err = run(capsys, "libvirt")
    assert code == 2 and "needs a sub-command" in err
