"""``sevbox check`` and ``sevbox guest-check`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Tree = Callable[[str], Path]


def sevbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sevbox", *args], capture_output=True, text=True, check=False
    )


def test_check_on_this_host_is_not_ready_for_sev_and_says_why() -> None:
    r = sevbox("check", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ready"]["sev"] is False
    assert doc["ready"]["sev-es"] is False
    assert doc["ready"]["sev-snp"] is False
    by_id = {c["id"]: c for c in doc["checks"]}
    # this machine is an Intel Xeon: the CPU items say so, and /dev/sev is absent
    assert not by_id["cpu.sev"]["ok"] and "not an AMD CPU" in by_id["cpu.sev"]["detail"]
    assert not by_id["dev.sev"]["ok"] and by_id["dev.sev"]["detail"].startswith("/dev/sev does not exist")
    # QEMU 10 (installed by set-up) knows both SEV object types but cannot get SEV capabilities here
    assert by_id["qemu.version"]["ok"] and "10.0" in by_id["qemu.version"]["detail"]
    q = by_id["qemu.sev-guest"]
    assert not q["ok"] and "QEMU knows sev-guest" in q["detail"] and "query-sev-capabilities" in q["detail"]
    # Debian's OVMF builds have no SEV hashes table
    assert not by_id["firmware.ovmf"]["ok"] and "no hashes table" in by_id["firmware.ovmf"]["detail"]


def test_check_text_output_on_this_host() -> None:
    r = sevbox("check", "--quick")
    assert r.returncode == 1
    assert "[FAIL] cpu.sev " in r.stdout
    assert "this CPU offers no SEV: guests here can only run unencrypted" in r.stdout
    assert "  sev is not ready: cpu.sev: " in r.stdout
    assert "[ -- ] libvirt.sev" in r.stdout  # needed by no mode: not a FAIL


@pytest.mark.parametrize(
    ("name", "code", "ready"),
    [
        ("snp", 0, [True, True, True, True]),
        ("snp-missing-kvm-param", 1, [True, True, True, False]),
        ("sev-es", 0, [True, True, True, False]),
        ("sev", 0, [True, True, False, False]),
        ("no-sev", 1, [True, False, False, False]),
    ],
)
def test_check_sysroot_trees(tree: Tree, name: str, code: int, ready: list[bool]) -> None:
    r = sevbox("check", "--json", "--sysroot", str(tree(name)))
    assert r.returncode == code, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert [doc["ready"][m] for m in ("vm", "sev", "sev-es", "sev-snp")] == ready


def test_require_flag(tree: Tree) -> None:
    root = str(tree("snp-missing-kvm-param"))
    assert sevbox("check", "--sysroot", root, "--require", "sev-es").returncode == 0
    assert sevbox("check", "--sysroot", root, "--require", "sev-snp").returncode == 1
    nosev = str(tree("no-sev"))
    assert sevbox("check", "--sysroot", nosev, "--require", "vm").returncode == 0


def test_text_output_names_the_fix(tree: Tree) -> None:
    r = sevbox("check", "--sysroot", str(tree("snp-missing-kvm-param")))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("[FAIL] kvm.sev-snp"))
    assert "fix: put kvm_amd.sev_snp=1 on the kernel command line" in lines[i + 1]
    assert "the strongest mode this CPU offers is sev-snp: NOT ready" in r.stdout


def test_bad_sysroot_is_a_usage_error(tmp_path: Path) -> None:
    r = sevbox("check", "--sysroot", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert r.stderr.startswith("sevbox: --sysroot") and len(r.stderr.strip().splitlines()) == 1
    assert sevbox("check", "--require", "tdx").returncode == 2


def test_help_teaches() -> None:
    h = sevbox("check", "--help").stdout
    for text in (
        "exit status:",
        "--sysroot DIR",
        "--require MODE",
        "examples:",
        "sev-snp   vm + kvm.usable cpu.sev-snp",
    ):
        assert text in h
    g = sevbox("guest-check", "--help").stdout
    assert "0xC0010131" in g and "exit status: 0 memory encryption is active" in g


def test_capture_then_sysroot_agrees_with_the_live_check(tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    r = sevbox("check", "--capture", str(dest))
    assert r.returncode == 0, r.stderr
    assert f"diagnose with: sevbox check --sysroot {dest}" in r.stdout
    assert (dest / "proc/cpuinfo").read_text() == Path("/proc/cpuinfo").read_text()
    assert (dest / "sevbox-capture/qemu-version.txt").read_text().startswith("QEMU emulator version")
    live = json.loads(sevbox("check", "--json").stdout)
    copy = json.loads(sevbox("check", "--json", "--sysroot", str(dest)).stdout)
    assert copy["ready"] == live["ready"]
    assert [(c["id"], c["ok"]) for c in copy["checks"]] == [(c["id"], c["ok"]) for c in live["checks"]]
    again = sevbox("check", "--capture", str(dest))
    assert again.returncode == 2 and "must be a new or empty directory" in again.stderr
