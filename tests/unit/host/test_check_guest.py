"""SEV_STATUS decoding and ``guest-check`` on recorded values, with a FAKE /dev/cpu/0/msr.

Recorded values (each MSR value is the one the kernel's decoded "SEV: Status:" line implies; the
kernel prints exactly the names of the set bits):

* QEMU SNP guest on a real SNP host (Linux 6.16 guest, dmesg published with the run):
  "Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP" / "SEV: Status: SEV SEV-ES SEV-SNP"
  -> 0x7.
* Azure SNP CVM (J. Piotrowski on LKML, 2024-02-14): "SEV: Status: SEV SEV-ES SEV-SNP vTom Reflect VC
  AI DebugSwap No HostIBS BTB Isol VMSA reg prot" (names were later made single words) -> 0x103DF.
* SEV (no ES) guest: bit 0 only -> 0x1; SEV-ES guest: 0x3 ("AMD Memory Encryption Features active:
  SEV SEV-ES" on 5.x kernels).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hostfakes import write_fake_msr
from hypothesis import given
from hypothesis import strategies as st

from sevbox.host import guestcheck, kmsg
from sevbox.host.msr import MSR_SEV_STATUS, SEV_STATUS_BITS, MsrRead, decode_sev_status, read_msr

AZURE = 0x103DF


def test_decode_azure_cvm_value() -> None:
    s = decode_sev_status(AZURE)
    assert s.names == (
        "SEV", "SEV-ES", "SEV-SNP", "vTom", "ReflectVC", "AI", "DebugSwap", "NoHostIBS", "BTBIsol",
        "VMSARegProt",
    )  # fmt: skip
    assert s.mode == "sev-snp" and s.encrypted and s.unknown_bits == ()
    assert s.describe() == (
        "SEV_STATUS=0x103df: SEV SEV-ES SEV-SNP vTom ReflectVC AI DebugSwap NoHostIBS BTBIsol VMSARegProt"
    )


@pytest.mark.parametrize(
    ("value", "mode"), [(0x0, "none"), (0x1, "sev"), (0x3, "sev-es"), (0x7, "sev-snp"), (0x807, "sev-snp")]
)
def test_modes(value: int, mode: str) -> None:
    assert decode_sev_status(value).mode == mode


def test_every_named_bit_and_reserved_bits() -> None:
    assert decode_sev_status(1 << 11).names == ("SecureTSC",)
    assert decode_sev_status(1 << 5).names == ("RI",)
    assert decode_sev_status(1 << 6).names == ("AI",)
    s = decode_sev_status(0x1 | 1 << 13 | 1 << 40)
    assert s.unknown_bits == (13, 40) and "unknown bits [13, 40]" in s.describe()
    assert decode_sev_status(0).describe() == "SEV_STATUS=0x0: not encrypted (the SEV bit is clear)"
    assert len(decode_sev_status(0).bits()) == len(SEV_STATUS_BITS)
    with pytest.raises(ValueError):
        decode_sev_status(1 << 64)


@given(st.integers(0, 2**64 - 1))
def test_decode_total(value: int) -> None:
    s = decode_sev_status(value)
    named = sum(1 << b for b in SEV_STATUS_BITS if s.has(b))
    assert named | sum(1 << b for b in s.unknown_bits) == value
    assert s.encrypted == bool(value & 1)


def test_read_msr_through_fake_device(tmp_path: Path) -> None:
    write_fake_msr(tmp_path, MSR_SEV_STATUS, AZURE)
    got = read_msr(MSR_SEV_STATUS, devroot=tmp_path / "dev/cpu")
    assert (got.value, got.reason) == (AZURE, "ok")


def test_read_msr_failures_are_values(tmp_path: Path) -> None:
    assert read_msr(MSR_SEV_STATUS, devroot=tmp_path).reason == "no-device"
    short = tmp_path / "0" / "msr"
    short.parent.mkdir()
    short.write_bytes(b"\x01")  # nothing at offset 0xC0010131: a short read, not a crash
    got = read_msr(MSR_SEV_STATUS, devroot=tmp_path)
    assert got.reason == "short" and got.value is None


def _guest_root(tmp_path: Path, msr: int | None, kmsg_lines: list[str]) -> Path:
    root = tmp_path / "guest"
    (root / "dev").mkdir(parents=True)
    if msr is not None:
        write_fake_msr(root, MSR_SEV_STATUS, msr)
    (root / "dev/kmsg").write_text("".join(f"6,{i},{i * 100},-;{ln}\n" for i, ln in enumerate(kmsg_lines)))
    return root


def test_guest_check_snp_guest(tmp_path: Path) -> None:
    root = _guest_root(
        tmp_path,
        0x7,
        [
            "Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP",
            "SEV: Status: SEV SEV-ES SEV-SNP ",
            "pid_max: default: 32768 minimum: 301",
        ],
    )
    (root / "dev/sev-guest").write_bytes(b"")
    r = guestcheck.guest_check(root)
    assert r.encrypted and r.mode == "sev-snp" and r.basis == "msr"
    assert r.summary == "encrypted: sev-snp is active (according to SEV_STATUS MSR)"
    assert r.kernel_lines == (
        "Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP",
        "SEV: Status: SEV SEV-ES SEV-SNP",
    )
    doc = r.to_json()
    assert doc["sev_status"]["value"] == "0x7" and doc["interfaces"]["/dev/sev-guest"] is True  # type: ignore[index]
    json.dumps(doc)


def test_guest_check_kernel_message_when_msr_unreadable(tmp_path: Path) -> None:
    root = _guest_root(tmp_path, None, ["AMD Memory Encryption Features active: SEV SEV-ES"])
    r = guestcheck.guest_check(root)
    assert (r.encrypted, r.mode, r.basis) == (True, "sev-es", "kernel")
    assert r.msr.reason == "no-device"


def test_guest_check_msr_beats_kernel_text(tmp_path: Path) -> None:
    root = _guest_root(tmp_path, 0x0, ["Memory Encryption Features active: AMD SEV"])
    r = guestcheck.guest_check(root)
    assert not r.encrypted and r.basis == "msr"


def test_guest_check_plain_not_encrypted(tmp_path: Path) -> None:
    def faulting(msr: int) -> MsrRead:  # what the msr driver gives when RDMSR faults (EIO)
        return MsrRead("/dev/cpu/0/msr", msr, None, "not-implemented", "reading MSR 0xc0010131 faulted (EIO)")

    root = _guest_root(tmp_path, None, ["Linux version 6.1.0-57-amd64"])
    r = guestcheck.guest_check(root, reader=faulting)
    assert (r.encrypted, r.mode, r.basis) == (False, "none", "none")
    assert r.summary.startswith("not encrypted")


def test_sme_only_is_not_a_guest_mode() -> None:
    assert guestcheck.mode_from_kernel(["Memory Encryption Features active: AMD SME"]) == "none"
    assert guestcheck.mode_from_kernel(["AMD Secure Encrypted Virtualization (SEV) active"]) == "sev"
    assert guestcheck.mode_from_kernel(["nothing here"]) is None


def test_kmsg_parsing() -> None:
    text = "6,1,100,-;first\n continuation=1\n4,2,200,c;second;with;semicolons\nplain line\n"
    assert kmsg.parse_kmsg(text) == ["first", "second;with;semicolons", "plain line"]


def test_guest_check_on_this_machine_says_not_encrypted() -> None:
    """This machine runs no SEV: the real command must say so plainly, as JSON and as text."""
    r = subprocess.run(
        [sys.executable, "-m", "sevbox", "guest-check", "--json"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["encrypted"] is False and doc["mode"] == "none"
    assert doc["summary"].startswith("not encrypted")
    t = subprocess.run(
        [sys.executable, "-m", "sevbox", "guest-check"], capture_output=True, text=True, check=False
    )
    assert t.returncode == 1 and t.stdout.startswith("NOT ENCRYPTED")
