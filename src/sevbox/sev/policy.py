"""Guest policies: SEV/SEV-ES (u32) and SEV-SNP (u64). Decode, encode and explain every bit.

SEV guest policy (AMD SEV API #55766, "Guest Policy" table)::

    bit  0     NODBG    debugging the guest is disallowed
    bit  1     NOKS     sharing keys with other guests is disallowed
    bit  2     ES       SEV-ES is required
    bit  3     NOSEND   sending the guest to another platform is disallowed
    bit  4     DOMAIN   the guest may only be sent to platforms in the same domain
    bit  5     SEV      the guest may only be sent to SEV-capable platforms
    bits 15:6  reserved (must be zero)
    bits 23:16 API_MAJOR  minimum firmware API major version
    bits 31:24 API_MINOR  minimum firmware API minor version

The SEV firmware checks reserved bits, but tools see policies in reports and in logs, so
:meth:`SevPolicy.decode` keeps reserved bits (``.reserved``) and :meth:`SevPolicy.explain` flags them.

SEV-SNP guest policy (AMD SEV-SNP ABI #56860, "Guest Policy Structure")::

    bits 7:0   ABI_MINOR          minimum ABI minor version
    bits 15:8  ABI_MAJOR          minimum ABI major version
    bit  16    SMT                SMT is allowed
    bit  17    reserved, must be one
    bit  18    MIGRATE_MA         a migration agent may be associated
    bit  19    DEBUG              debugging is allowed
    bit  20    SINGLE_SOCKET      the guest may only run on one socket
    bit  21    CXL_ALLOW          CXL may be populated with the guest's private memory
    bit  22    MEM_AES_256_XTS    AES-256-XTS memory encryption is required
    bit  23    RAPL_DIS           running average power limit (RAPL) must be disabled
    bit  24    CIPHERTEXT_HIDING  ciphertext hiding (DRAM) must be enabled
    bit  25    PAGE_SWAP_DISABLE  SNP_PAGE_MOVE/SWAP_OUT/SWAP_IN are disallowed for the guest
    bits 63:26 reserved (must be zero)

The firmware refuses an SNP policy with bit 17 clear or any of bits 63:26 set, and so does
:meth:`SnpPolicy.decode` (:class:`~sevbox.errors.FormatError`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from sevbox.errors import FormatError, UsageError

__all__ = ["SevPolicy", "SnpPolicy"]

_SEV_FLAGS: tuple[tuple[str, int, str, str], ...] = (
    # (name, bit, meaning when set, meaning when clear)
    ("NODBG", 0, "debugging the guest is disallowed", "debugging the guest is allowed"),
    ("NOKS", 1, "sharing keys with other guests is disallowed", "key sharing with other guests is allowed"),
    ("ES", 2, "SEV-ES is required (register state is encrypted)", "SEV-ES is not required"),
    ("NOSEND", 3, "sending the guest to another platform is disallowed", "the guest may be sent"),
    (
        "DOMAIN",
        4,
        "the guest may only be sent to platforms in the same domain",
        "no domain restriction on sending",
    ),
    ("SEV", 5, "the guest may only be sent to SEV-capable platforms", "no SEV restriction on sending"),
)
_SEV_RESERVED_MASK = 0xFFC0  # bits 15:6
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

_SNP_FLAGS: tuple[tuple[str, int, str, str], ...] = (
    ("SMT", 16, "SMT is allowed", "SMT must be disabled on the host"),
    (
        "MIGRATE_MA",
        18,
        "a migration agent may be associated with the guest",
        "no migration agent may be associated",
    ),
    ("DEBUG", 19, "debugging the guest is allowed", "debugging the guest is disallowed"),
    ("SINGLE_SOCKET", 20, "the guest may only run on a single socket", "the guest may span sockets"),
    (
        "CXL_ALLOW",
        21,
        "CXL memory may hold the guest's private memory",
        "CXL memory may not hold the guest's private memory",
    ),
    (
        "MEM_AES_256_XTS",
        22,
        "AES-256-XTS memory encryption is required",
        "AES-128 memory encryption is allowed",
    ),
    ("RAPL_DIS", 23, "RAPL (power limit interface) must be disabled", "RAPL may be enabled"),
    (
        "CIPHERTEXT_HIDING",
        24,
        "ciphertext hiding for DRAM must be enabled",
        "ciphertext hiding is not required",
    ),
    (
        "PAGE_SWAP_DISABLE",
        25,
        "page move/swap commands are disallowed for the guest",
        "page move/swap commands are allowed",
    ),
)
_SNP_RESERVED_ONE = 1 << 17
_SNP_RESERVED_MASK = _U64 & ~((1 << 26) - 1)  # bits 63:26
_SNP_ALIASES = {"CIPHERTEXT_HIDING_DRAM": "CIPHERTEXT_HIDING", "MIGRATION_AGENT": "MIGRATE_MA"}


def _norm(name: str) -> str:
    return name.strip().upper().replace("-", "_")


def _check_int(value: object, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{what} must be an integer, not {type(value).__name__}", what=what)
    if not 0 <= value <= limit:
        raise FormatError(f"{what} {value:#x} does not fit in {limit.bit_length()} bits", what=what)
    return value


def _parse_version(key: str, text: str, what: str) -> int:
    try:
        number = int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {key} needs a number 0-255, not {text!r}") from None
    if not 0 <= number <= 0xFF:
        raise UsageError(f"{what}: {key} must be 0-255, not {number}")
    return number


@dataclass(frozen=True, slots=True)
class SevPolicy:
    """An SEV or SEV-ES guest policy (u32)."""

    nodbg: bool = False
    noks: bool = False
    es: bool = False
    nosend: bool = False
    domain: bool = False
    sev: bool = False
    api_major: int = 0
    api_minor: int = 0
    reserved: int = 0  # bits 15:6 exactly as found (shifted down by 6); must be zero

    WHAT: ClassVar[str] = "SEV policy"
    NAMES: ClassVar[tuple[str, ...]] = (*(f[0] for f in _SEV_FLAGS), "API_MAJOR=N", "API_MINOR=N")

    def __post_init__(self) -> None:
        for name in ("api_major", "api_minor"):
            _check_int(getattr(self, name), 0xFF, f"SEV policy {name}")
        _check_int(self.reserved, 0x3FF, "SEV policy reserved bits")

    @classmethod
    def decode(cls, value: int) -> SevPolicy:
        value = _check_int(value, _U32, cls.WHAT)
        flags = {name.lower(): bool(value >> bit & 1) for name, bit, _, _ in _SEV_FLAGS}
        return cls(
            **flags,
            api_major=value >> 16 & 0xFF,
            api_minor=value >> 24 & 0xFF,
            reserved=(value & _SEV_RESERVED_MASK) >> 6,
        )

    def encode(self) -> int:
        value = 0
        for name, bit, _, _ in _SEV_FLAGS:
            if getattr(self, name.lower()):
                value |= 1 << bit
        return value | self.reserved << 6 | self.api_major << 16 | self.api_minor << 24

    @classmethod
    def from_names(cls, names: list[str]) -> SevPolicy:
        """Build a policy from flag names (``NODBG``, ``ES``, ...) and ``API_MAJOR=N``/``API_MINOR=N``.

        Names are case-insensitive; ``-`` and ``_`` are the same. Unknown names raise UsageError.
        """
        known = {f[0] for f in _SEV_FLAGS}
        kwargs: dict[str, Any] = {}
        for raw in names:
            key, sep, val = _norm(raw).partition("=")
            if key in ("API_MAJOR", "API_MINOR") and sep:
                kwargs[key.lower()] = _parse_version(key, val, cls.WHAT)
            elif key in known and not sep:
                kwargs[key.lower()] = True
            else:
                raise UsageError(f"unknown SEV policy name {raw!r} (known: {', '.join(cls.NAMES)})")
        return cls(**kwargs)

    @property
    def allows_debug(self) -> bool:
        return not self.nodbg

    @property
    def requires_es(self) -> bool:
        return self.es

    def names(self) -> list[str]:
        """The flag names that are set, in bit order."""
        return [name for name, _, _, _ in _SEV_FLAGS if getattr(self, name.lower())]

    def explain(self) -> list[tuple[str, str]]:
        """Every field with its meaning, bit by bit: ``[("NODBG", "1: debugging ..."), ...]``."""
        out: list[tuple[str, str]] = []
        for name, bit, on, off in _SEV_FLAGS:
            is_set = getattr(self, name.lower())
            out.append((name, f"bit {bit} = {int(is_set)}: {on if is_set else off}"))
        if self.reserved:
            out.append(
                ("reserved", f"bits 15:6 = {self.reserved:#x}: must be zero; the firmware rejects this")
            )
        else:
            out.append(("reserved", "bits 15:6 = 0"))
        out.append(("API_MAJOR", f"bits 23:16 = {self.api_major}: minimum firmware API major version"))
        out.append(("API_MINOR", f"bits 31:24 = {self.api_minor}: minimum firmware API minor version"))
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["value"] = f"{self.encode():#x}"
        data["names"] = self.names()
        return data


@dataclass(frozen=True, slots=True)
class SnpPolicy:
    """An SEV-SNP guest policy (u64). Bit 17 is always set; reserved bits 63:26 are always clear."""

    abi_minor: int = 0
    abi_major: int = 0
    smt: bool = False
    migrate_ma: bool = False
    debug: bool = False
    single_socket: bool = False
    cxl_allow: bool = False
    mem_aes_256_xts: bool = False
    rapl_dis: bool = False
    ciphertext_hiding: bool = False
    page_swap_disable: bool = False

    WHAT: ClassVar[str] = "SNP guest policy"
    NAMES: ClassVar[tuple[str, ...]] = (*(f[0] for f in _SNP_FLAGS), "ABI_MAJOR=N", "ABI_MINOR=N")

    def __post_init__(self) -> None:
        for name in ("abi_major", "abi_minor"):
            _check_int(getattr(self, name), 0xFF, f"SNP policy {name}")

    @classmethod
    def decode(cls, value: int) -> SnpPolicy:
        value = _check_int(value, _U64, cls.WHAT)
        if value & _SNP_RESERVED_MASK:
            raise FormatError(
                f"SNP guest policy {value:#x} sets reserved bits {value & _SNP_RESERVED_MASK:#x} "
                "(bits 63:26 must be zero)",
                what=cls.WHAT,
            )
        if not value & _SNP_RESERVED_ONE:
            raise FormatError(
                f"SNP guest policy {value:#x} has bit 17 clear (reserved, must be one)", what=cls.WHAT
            )
        flags = {name.lower(): bool(value >> bit & 1) for name, bit, _, _ in _SNP_FLAGS}
        return cls(abi_minor=value & 0xFF, abi_major=value >> 8 & 0xFF, **flags)

    def encode(self) -> int:
        value = _SNP_RESERVED_ONE | self.abi_minor | self.abi_major << 8
        for name, bit, _, _ in _SNP_FLAGS:
            if getattr(self, name.lower()):
                value |= 1 << bit
        return value

    @classmethod
    def from_names(cls, names: list[str]) -> SnpPolicy:
        """Build a policy from flag names (``SMT``, ``DEBUG``, ...) and ``ABI_MAJOR=N``/``ABI_MINOR=N``.

        ``API_MAJOR``/``API_MINOR`` and ``CIPHERTEXT_HIDING_DRAM`` are accepted as aliases.
        """
        known = {f[0] for f in _SNP_FLAGS}
        kwargs: dict[str, Any] = {}
        for raw in names:
            key, sep, val = _norm(raw).partition("=")
            key = _SNP_ALIASES.get(key, key)
            if key in ("API_MAJOR", "API_MINOR"):
                key = "ABI" + key[3:]
            if key in ("ABI_MAJOR", "ABI_MINOR") and sep:
                kwargs[key.lower()] = _parse_version(key, val, cls.WHAT)
            elif key in known and not sep:
                kwargs[key.lower()] = True
            else:
                raise UsageError(f"unknown SNP policy name {raw!r} (known: {', '.join(cls.NAMES)})")
        return cls(**kwargs)

    @property
    def allows_debug(self) -> bool:
        return self.debug

    @property
    def allows_migration_agent(self) -> bool:
        return self.migrate_ma

    def names(self) -> list[str]:
        return [name for name, _, _, _ in _SNP_FLAGS if getattr(self, name.lower())]

    def explain(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = [
            ("ABI_MINOR", f"bits 7:0 = {self.abi_minor}: minimum firmware ABI minor version"),
            ("ABI_MAJOR", f"bits 15:8 = {self.abi_major}: minimum firmware ABI major version"),
        ]
        for name, bit, on, off in _SNP_FLAGS:
            is_set = getattr(self, name.lower())
            out.append((name, f"bit {bit} = {int(is_set)}: {on if is_set else off}"))
            if bit == 16:
                out.append(("reserved", "bit 17 = 1: reserved, must be one"))
        out.append(("reserved", "bits 63:26 = 0: reserved, must be zero"))
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["value"] = f"{self.encode():#x}"
        data["names"] = self.names()
        return data
