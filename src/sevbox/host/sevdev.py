"""``/dev/sev``: the SEV firmware's platform commands, through Linux's SEV_ISSUE_CMD ioctl.

Layouts from Linux ``include/uapi/linux/psp-sev.h`` (all ``__packed``, little-endian)::

    struct sev_issue_cmd            { u32 cmd; u64 data; u32 error; }                   16 bytes
    struct sev_user_data_status     { u8 api_major, api_minor, state; u32 flags;
                                      u8 build; u32 guest_count; }                      12 bytes
    struct sev_user_data_pdh_cert_export { u64 pdh_cert_address; u32 pdh_cert_len;
                                      u64 cert_chain_address; u32 cert_chain_len; }     24 bytes
    struct sev_user_data_get_id     { u8 socket1[64], socket2[64]; }                   128 bytes
    struct sev_user_data_get_id2    { u64 address; u32 length; }                        12 bytes
    struct sev_user_data_snp_status { u8 api_major, api_minor, state, rmp_init:1;
                                      u32 build_id; u32 mask_chip_id:1, mask_chip_key:1,
                                      vlek_en:1; u32 guest_count; u64 current_tcb,
                                      reported_tcb; }                                   32 bytes

    #define SEV_ISSUE_CMD _IOWR('S', 0x0, struct sev_issue_cmd)   = 0xC0105300

Commands are the enum's positions: PLATFORM_STATUS 1, PDH_CERT_EXPORT 5, GET_ID 7, GET_ID2 8,
SNP_PLATFORM_STATUS 9. ``flags`` holds OWNER in bit 0 and CONFIG_ES in bit 8 (SEV API #55766,
PLATFORM_STATUS); the firmware's BUILD byte follows it. Encoding and decoding are pure; only
:class:`SevDevice` touches the device.
"""

from __future__ import annotations

import ctypes
import enum
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sevbox.errors import FormatError, HostError

__all__ = [
    "GET_ID_STRUCT_SIZE",
    "ISSUE_CMD",
    "PDH_CERT_EXPORT",
    "PDH_CERT_SIZE",
    "SEV_ISSUE_CMD",
    "SNP_STATUS",
    "STATUS",
    "Command",
    "PlatformStatus",
    "SevDevice",
    "SevFirmwareError",
    "SnpPlatformStatus",
    "decode_issue_cmd",
    "decode_platform_status",
    "decode_snp_platform_status",
    "encode_issue_cmd",
    "encode_pdh_cert_export",
    "ioc",
]

# asm-generic/ioctl.h: dir(2) | size(14) | type(8) | nr(8)
_IOC_WRITE, _IOC_READ = 1, 2


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    if not (0 <= size < 1 << 14 and 0 <= nr < 256 and 0 <= type_ < 256):
        raise ValueError("ioctl field out of range")
    return direction << 30 | size << 16 | type_ << 8 | nr


ISSUE_CMD = struct.Struct("<IQI")
STATUS = struct.Struct("<BBBIBI")
PDH_CERT_EXPORT = struct.Struct("<QIQI")
GET_ID2 = struct.Struct("<QI")
SNP_STATUS = struct.Struct("<BBBBIIIQQ")
GET_ID_STRUCT_SIZE = 128
SEV_ISSUE_CMD = ioc(_IOC_READ | _IOC_WRITE, ord("S"), 0, ISSUE_CMD.size)
PDH_CERT_SIZE = 0x824  # one SEV certificate (API #55766 appendix C.1)


class Command(enum.IntEnum):
    FACTORY_RESET = 0
    PLATFORM_STATUS = 1
    PEK_GEN = 2
    PEK_CSR = 3
    PDH_GEN = 4
    PDH_CERT_EXPORT = 5
    PEK_CERT_IMPORT = 6
    GET_ID = 7
    GET_ID2 = 8
    SNP_PLATFORM_STATUS = 9
    SNP_COMMIT = 10
    SNP_SET_CONFIG = 11
    SNP_VLEK_LOAD = 12


_FW_ERRORS = {
    1: "INVALID_PLATFORM_STATE",
    2: "INVALID_GUEST_STATE",
    3: "INVALID_CONFIG",
    4: "INVALID_LEN",
    5: "ALREADY_OWNED",
    6: "INVALID_CERTIFICATE",
    7: "POLICY_FAILURE",
    8: "INACTIVE",
    9: "INVALID_ADDRESS",
    10: "BAD_SIGNATURE",
    11: "BAD_MEASUREMENT",
    12: "ASID_OWNED",
    13: "INVALID_ASID",
    14: "WBINVD_REQUIRED",
    15: "DFFLUSH_REQUIRED",
    16: "INVALID_GUEST",
    17: "INVALID_COMMAND",
    18: "ACTIVE",
    19: "HWSEV_RET_PLATFORM",
    20: "HWSEV_RET_UNSAFE",
    21: "UNSUPPORTED",
    22: "INVALID_PARAM",
    23: "RESOURCE_LIMIT",
    24: "SECURE_DATA_INVALID",
}

PLATFORM_STATES = {0: "UNINIT", 1: "INIT", 2: "WORKING"}
SNP_STATES = {0: "UNINIT", 1: "INIT"}


class SevFirmwareError(HostError):
    """The ioctl failed. ``fw_error`` is the SEV firmware's status code (0 when it was not called)."""

    def __init__(self, message: str, *, command: Command, fw_error: int, errno_: int) -> None:
        super().__init__(message)
        self.command = command
        self.fw_error = fw_error
        self.errno = errno_


def encode_issue_cmd(command: int, data_address: int) -> bytes:
    return ISSUE_CMD.pack(command, data_address, 0)


def decode_issue_cmd(raw: bytes) -> tuple[int, int, int]:
    """(cmd, data address, firmware error) from a struct sev_issue_cmd."""
    if len(raw) != ISSUE_CMD.size:
        raise FormatError(f"sev_issue_cmd is {ISSUE_CMD.size} bytes, got {len(raw)}", what="sev_issue_cmd")
    cmd, data, error = ISSUE_CMD.unpack(raw)
    return int(cmd), int(data), int(error)


def encode_pdh_cert_export(pdh_address: int, pdh_len: int, chain_address: int, chain_len: int) -> bytes:
    return PDH_CERT_EXPORT.pack(pdh_address, pdh_len, chain_address, chain_len)


def fw_error_name(code: int) -> str:
    return _FW_ERRORS.get(code, f"{code:#x}")


@dataclass(frozen=True)
class PlatformStatus:
    api_major: int
    api_minor: int
    state: int
    flags: int
    build: int
    guest_count: int

    @property
    def state_name(self) -> str:
        return PLATFORM_STATES.get(self.state, f"unknown({self.state})")

    @property
    def owner_external(self) -> bool:
        return bool(self.flags & 1)

    @property
    def config_es(self) -> bool:
        return bool(self.flags & 0x100)

    @property
    def api(self) -> str:
        return f"{self.api_major}.{self.api_minor}"

    def describe(self) -> str:
        es = ", SEV-ES configured" if self.config_es else ""
        owner = "external" if self.owner_external else "self"
        return (
            f"SEV API {self.api} build {self.build}, state {self.state_name}, owner {owner}{es},"
            f" {self.guest_count} guests"
        )


def decode_platform_status(raw: bytes) -> PlatformStatus:
    if len(raw) != STATUS.size:
        raise FormatError(
            f"PLATFORM_STATUS data is {STATUS.size} bytes, got {len(raw)}", what="sev_user_data_status"
        )
    major, minor, state, flags, build, guests = STATUS.unpack(raw)
    return PlatformStatus(major, minor, state, flags, build, guests)


@dataclass(frozen=True)
class SnpPlatformStatus:
    api_major: int
    api_minor: int
    state: int
    rmp_initialized: bool
    build_id: int
    mask_chip_id: bool
    mask_chip_key: bool
    vlek_enabled: bool
    guest_count: int
    current_tcb: int
    reported_tcb: int

    def describe(self) -> str:
        return (
            f"SEV-SNP API {self.api_major}.{self.api_minor} build {self.build_id},"
            f" state {SNP_STATES.get(self.state, self.state)},"
            f" RMP {'initialized' if self.rmp_initialized else 'not initialized'},"
            f" {self.guest_count} guests, reported TCB {self.reported_tcb:016x}"
        )


def decode_snp_platform_status(raw: bytes) -> SnpPlatformStatus:
    if len(raw) != SNP_STATUS.size:
        raise FormatError(
            f"SNP_PLATFORM_STATUS data is {SNP_STATUS.size} bytes, got {len(raw)}",
            what="sev_user_data_snp_status",
        )
    major, minor, state, rmp, build, masks, guests, cur, rep = SNP_STATUS.unpack(raw)
    return SnpPlatformStatus(
        major,
        minor,
        state,
        bool(rmp & 1),
        build,
        bool(masks & 1),
        bool(masks & 2),
        bool(masks & 4),
        guests,
        cur,
        rep,
    )


class SevDevice:
    """An open ``/dev/sev``. Use as a context manager; every method issues one SEV command."""

    def __init__(self, path: Path = Path("/dev/sev")) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDWR)
        except OSError as err:
            raise HostError(f"cannot open {path}: {err.strerror}") from err

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SevDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _issue(self, command: Command, data: ctypes.Array[ctypes.c_char]) -> None:
        if self._fd is None:
            raise HostError(f"{self.path} is closed")
        buf = bytearray(encode_issue_cmd(command, ctypes.addressof(data)))
        try:
            fcntl.ioctl(self._fd, SEV_ISSUE_CMD, buf, True)
        except OSError as err:
            fw = decode_issue_cmd(bytes(buf))[2]
            why = f"firmware error {fw_error_name(fw)}" if fw else err.strerror
            raise SevFirmwareError(
                f"SEV {command.name} failed: {why}", command=command, fw_error=fw, errno_=err.errno or 0
            ) from err

    def platform_status(self) -> PlatformStatus:
        data = ctypes.create_string_buffer(STATUS.size)
        self._issue(Command.PLATFORM_STATUS, data)
        return decode_platform_status(data.raw)

    def snp_platform_status(self) -> SnpPlatformStatus:
        # The kernel wants a page it can hand to the firmware; the struct is at its start.
        data = ctypes.create_string_buffer(4096)
        self._issue(Command.SNP_PLATFORM_STATUS, data)
        return decode_snp_platform_status(data.raw[: SNP_STATUS.size])

    def pdh_cert_export(self) -> tuple[bytes, bytes]:
        """(PDH certificate, chain PEK|OCA|CEK), each in the 0x824-byte SEV certificate format."""
        pdh = ctypes.create_string_buffer(PDH_CERT_SIZE)
        chain = ctypes.create_string_buffer(3 * PDH_CERT_SIZE)
        args = ctypes.create_string_buffer(
            encode_pdh_cert_export(
                ctypes.addressof(pdh), PDH_CERT_SIZE, ctypes.addressof(chain), 3 * PDH_CERT_SIZE
            ),
            PDH_CERT_EXPORT.size,
        )
        self._issue(Command.PDH_CERT_EXPORT, args)
        _, pdh_len, _, chain_len = PDH_CERT_EXPORT.unpack(args.raw)
        return pdh.raw[: min(pdh_len, PDH_CERT_SIZE)], chain.raw[: min(chain_len, 3 * PDH_CERT_SIZE)]

    def get_id(self) -> bytes:
        """The chip's unique ID (64 bytes per socket), via GET_ID2, falling back to GET_ID."""
        out = ctypes.create_string_buffer(GET_ID_STRUCT_SIZE)
        args = ctypes.create_string_buffer(
            GET_ID2.pack(ctypes.addressof(out), GET_ID_STRUCT_SIZE), GET_ID2.size
        )
        try:
            self._issue(Command.GET_ID2, args)
        except SevFirmwareError:
            legacy = ctypes.create_string_buffer(GET_ID_STRUCT_SIZE)
            self._issue(Command.GET_ID, legacy)
            return legacy.raw  # socket1[64] | socket2[64] (zeros on a one-socket machine)
        length = GET_ID2.unpack(args.raw)[1]
        return out.raw[: min(length, GET_ID_STRUCT_SIZE)]
