"""/dev/sev ioctl encoding against the values of Linux's include/uapi/linux/psp-sev.h.

The expected numbers were printed by a C program compiled here against Debian's linux-libc-dev
6.1.187-1 headers (/usr/include/linux/psp-sev.h, kvm.h) with gcc: SEV_ISSUE_CMD = 0xc0105300,
KVM_GET_API_VERSION = 0xae00; sizeof sev_issue_cmd 16 (data at 4, error at 12), sev_user_data_status
12 (flags at 3, build at 7, guest_count at 8), sev_user_data_pdh_cert_export 24 (pdh_cert_len at 8,
cert_chain_address at 12, cert_chain_len at 20), sev_user_data_get_id 128, get_id2 12; commands
PLATFORM_STATUS 1, PDH_CERT_EXPORT 5, GET_ID 7, GET_ID2 8. The SNP status struct (32 bytes) and
SNP_PLATFORM_STATUS = 9 are newer than those headers: from torvalds/linux psp-sev.h.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sevbox.errors import FormatError, HostError
from sevbox.host import probe, sevdev
from sevbox.host.sevdev import Command


def test_request_number_matches_header() -> None:
    assert sevdev.SEV_ISSUE_CMD == 0xC0105300
    assert probe.KVM_GET_API_VERSION == 0xAE00
    assert sevdev.ioc(0, 0xAE, 0, 0) == 0xAE00  # _IO(KVMIO, 0)


def test_struct_sizes_match_header() -> None:
    assert sevdev.ISSUE_CMD.size == 16
    assert sevdev.STATUS.size == 12
    assert sevdev.PDH_CERT_EXPORT.size == 24
    assert sevdev.GET_ID2.size == 12
    assert sevdev.GET_ID_STRUCT_SIZE == 128
    assert sevdev.SNP_STATUS.size == 32


def test_command_numbers_match_header() -> None:
    assert (Command.PLATFORM_STATUS, Command.PDH_CERT_EXPORT, Command.GET_ID, Command.GET_ID2) == (1, 5, 7, 8)
    assert Command.SNP_PLATFORM_STATUS == 9


def test_issue_cmd_packing_offsets() -> None:
    raw = sevdev.encode_issue_cmd(Command.PDH_CERT_EXPORT, 0x1122334455667788)
    assert raw[0:4] == (5).to_bytes(4, "little")
    assert raw[4:12] == (0x1122334455667788).to_bytes(8, "little")  # data at offset 4: packed
    assert raw[12:16] == bytes(4)  # error at offset 12
    assert sevdev.decode_issue_cmd(raw[:12] + (0x15).to_bytes(4, "little")) == (5, 0x1122334455667788, 0x15)
    with pytest.raises(FormatError):
        sevdev.decode_issue_cmd(raw[:15])


def test_pdh_export_offsets() -> None:
    raw = sevdev.encode_pdh_cert_export(0xA0, 0x824, 0xB0, 0x186C)
    assert int.from_bytes(raw[8:12], "little") == 0x824
    assert int.from_bytes(raw[12:20], "little") == 0xB0
    assert int.from_bytes(raw[20:24], "little") == 0x186C


def test_platform_status_decode() -> None:
    # api 1.55, state WORKING(2), flags OWNER|CONFIG_ES, build 38 at offset 7, 3 guests at offset 8
    raw = bytes([1, 55, 2]) + (0x101).to_bytes(4, "little") + bytes([38]) + (3).to_bytes(4, "little")
    s = sevdev.decode_platform_status(raw)
    assert (s.api, s.state_name, s.build, s.guest_count) == ("1.55", "WORKING", 38, 3)
    assert s.owner_external and s.config_es
    assert s.describe() == "SEV API 1.55 build 38, state WORKING, owner external, SEV-ES configured, 3 guests"
    with pytest.raises(FormatError):
        sevdev.decode_platform_status(raw[:11])


def test_snp_platform_status_decode() -> None:
    raw = (
        bytes([1, 55, 1, 1])
        + (38).to_bytes(4, "little")
        + (0b110).to_bytes(4, "little")  # mask_chip_key, vlek_en
        + (2).to_bytes(4, "little")
        + (0x1600000000000948).to_bytes(8, "little")
        + (0x0016000000000009).to_bytes(8, "little")
    )
    s = sevdev.decode_snp_platform_status(raw)
    assert s.rmp_initialized and s.build_id == 38 and s.guest_count == 2
    assert (s.mask_chip_id, s.mask_chip_key, s.vlek_enabled) == (False, True, True)
    assert s.reported_tcb == 0x0016000000000009
    with pytest.raises(FormatError):
        sevdev.decode_snp_platform_status(raw + b"\0")


@given(st.binary(min_size=12, max_size=12))
def test_platform_status_total(raw: bytes) -> None:
    s = sevdev.decode_platform_status(raw)
    assert sevdev.STATUS.pack(s.api_major, s.api_minor, s.state, s.flags, s.build, s.guest_count) == raw
    assert s.describe()


def test_ioctl_on_a_non_device_is_a_typed_error(tmp_path: Path) -> None:
    fake = tmp_path / "sev"  # a regular file: the ioctl fails with ENOTTY, never a crash
    fake.write_bytes(b"")
    with sevdev.SevDevice(fake) as dev, pytest.raises(sevdev.SevFirmwareError) as info:
        dev.platform_status()
    assert info.value.command == Command.PLATFORM_STATUS and info.value.fw_error == 0
    assert "SEV PLATFORM_STATUS failed" in str(info.value)
    with pytest.raises(HostError, match="cannot open"):
        sevdev.SevDevice(tmp_path / "absent")


def test_ioc_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        sevdev.ioc(3, ord("S"), 0, 1 << 14)
