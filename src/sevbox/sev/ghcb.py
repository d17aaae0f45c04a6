"""The SEV-ES guest<->hypervisor protocol (GHCB): the MSR protocol and the GHCB page. Pure.

Sources: AMD "SEV-ES Guest-Hypervisor Communication Block Standardization" (#56421), sections
"GHCB MSR Protocol" and "GHCB Layout"; the same constants appear in Linux's
``arch/x86/include/asm/sev-common.h`` and ``svm.h``.

**MSR protocol.** Before a GHCB page is set up (and for a few requests after), guest and hypervisor
talk through the GHCB MSR (0xC001_0130) across a VMGEXIT. The low 12 bits (GHCBInfo) say what the
value is; bits 63:12 (GHCBData) carry the payload::

    GHCBInfo  direction   meaning                 GHCBData
    0x000     guest       GHCB page address       [63:12] GFN of the GHCB page (value = its GPA)
    0x001     hypervisor  SEV information         [63:48] max protocol, [47:32] min, [31:24] C-bit
    0x002     guest       SEV information request
    0x004     guest       CPUID request           [63:32] function, [31:30] register (0 EAX..3 EDX)
    0x005     hypervisor  CPUID response          [63:32] value, [31:30] register
    0x006     guest       AP reset hold request
    0x007     hypervisor  AP reset hold response  [63:12] result (non-zero: the AP was released)
    0x010     guest       preferred GHCB GPA request
    0x011     hypervisor  preferred GHCB GPA      [63:12] GFN (0xF_FFFF_FFFF_FFFF: no preference)
    0x012     guest       register GHCB GPA       [63:12] GFN
    0x013     hypervisor  registered GHCB GPA     [63:12] GFN (the same GFN on success)
    0x014     guest       page state change       [55:52] operation (1 private, 2 shared),
                                                  [51:12] GFN
    0x015     hypervisor  page state change resp. [63:32] error code (0 success)
    0x016     guest       run at VMPL request     [39:32] VMPL
    0x017     hypervisor  run at VMPL response    [63:32] error code (0 success)
    0x080     guest       hypervisor features req.
    0x081     hypervisor  hypervisor features     [63:12] feature bitmap
    0x100     guest       termination request     [23:16] reason code, [15:12] reason code set

Bits a layout does not name are reserved (must be zero). :func:`decode_msr` keeps them
(``.reserved``, in place, unshifted) so that ``decode_msr(v).encode() == v`` for every 64-bit ``v``,
and :meth:`MsrMessage.explain` flags them.

**GHCB page** (4 KiB, shared with the hypervisor)::

    0x000-0x3EF  save area: CPL, XSS, DR7, RIP, RSP, RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8-R15,
                 SW_EXITCODE 0x390, SW_EXITINFO1 0x398, SW_EXITINFO2 0x3A0, SW_SCRATCH 0x3A8,
                 XCR0 0x3E8
    0x3F0        valid bitmap (16 bytes): bit N set = the quadword at offset 8*N is valid
    0x400        x87 state GPA
    0x800        shared buffer (2032 bytes; SW_SCRATCH points into it for MMIO/string I/O/PSC)
    0xFFA        protocol version (u16)
    0xFFC        GHCB usage (u32; 0 = standard GHCB)

**NAE events.** For each non-automatic exit the guest must mark, in the valid bitmap, the state the
hypervisor needs, and the hypervisor returns state the same way. :data:`NAE_EVENTS` is that table
(from the spec's "Non-Automatic Exit" tables and KVM's check of it); :func:`check_page` applies it to
a page and names what is missing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sevbox.errors import FormatError

__all__ = [
    "GHCB_INPUT_ERRORS",
    "GHCB_MSR",
    "GHCB_SIZE",
    "HV_FEATURES",
    "NAE_EVENTS",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "SAVE_FIELDS",
    "SHARED_BUFFER_OFFSET",
    "SHARED_BUFFER_SIZE",
    "ApResetHoldRequest",
    "ApResetHoldResponse",
    "CpuidRequest",
    "CpuidResponse",
    "Finding",
    "Ghcb",
    "GhcbGpa",
    "HvFeaturesRequest",
    "HvFeaturesResponse",
    "MsrMessage",
    "NaeEvent",
    "Need",
    "PageStateChangeRequest",
    "PageStateChangeResponse",
    "PreferredGpaRequest",
    "PreferredGpaResponse",
    "RegisterGpaRequest",
    "RegisterGpaResponse",
    "RunVmplRequest",
    "RunVmplResponse",
    "SevInfoRequest",
    "SevInfoResponse",
    "TerminationRequest",
    "UnknownMsr",
    "check_page",
    "decode_msr",
    "explain_page",
    "nae_event",
]

GHCB_MSR = 0xC001_0130
GHCB_SIZE = 4096
PROTOCOL_MIN = 1
PROTOCOL_MAX = 2
_U64 = (1 << 64) - 1
_INFO_MASK = 0xFFF

# ---------------------------------------------------------------------------------------------
# MSR protocol
# ---------------------------------------------------------------------------------------------

HV_FEATURES: dict[int, str] = {
    0: "SEV-SNP",
    1: "SEV-SNP AP creation",
    2: "SEV-SNP restricted injection",
    3: "SEV-SNP restricted injection timer",
    4: "APIC ID list",
    5: "SEV-SNP multiple VMPL levels",
}

_CPUID_REGS = ("EAX", "EBX", "ECX", "EDX")
_PSC_OPS = {1: "page assignment, private", 2: "page assignment, shared"}
_TERM_REASONS: dict[int, dict[int, str]] = {
    0: {
        0: "general termination request",
        1: "SEV-ES / GHCB protocol range is not supported",
        2: "SEV-SNP features are not supported",
    },
    # Reason set 1 is Linux's own (sev-common.h), not the spec's.
    1: {
        0: "Linux: GHCB GPA registration failed",
        1: "Linux: page state change failed",
        2: "Linux: PVALIDATE failed",
        3: "Linux: SNP guest is not running at VMPL 0",
        4: "Linux: CPUID validation failed",
        5: "Linux: CPUID failed during hypervisor fallback",
        6: "Linux: secrets page failure",
        7: "Linux: SVSM not advertised in the secrets page",
        8: "Linux: SVSM present but VMPL is 0",
        9: "Linux: SVSM calling area not page aligned",
        10: "Linux: Secure TSC initialisation failed",
        11: "Linux: SVSM calling area could not be remapped",
    },
}
_TERM_SETS = {0: "GHCB standard (spec)", 1: "Linux-specific"}
PREF_GPA_NONE = 0xF_FFFF_FFFF_FFFF


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


@dataclass(frozen=True, slots=True)
class MsrMessage:
    """One GHCB MSR value. Subclasses name their fields in ``FIELDS`` as (attribute, low bit, high bit).

    ``reserved`` holds the value's bits (in place) that the layout reserves; it must be zero for a
    well-formed message but is kept so that any 64-bit value decodes and re-encodes exactly.
    """

    CODE: ClassVar[int] = -1
    NAME: ClassVar[str] = ""
    DIRECTION: ClassVar[str] = ""  # "guest" (request) or "hypervisor" (response)
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = ()

    @classmethod
    def reserved_mask(cls) -> int:
        used = _INFO_MASK
        for _, lo, hi in cls.FIELDS:
            used |= _mask(lo, hi)
        return _U64 & ~used

    def _check(self) -> None:
        for name, lo, hi in self.FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise FormatError(f"{self.NAME}: {name} must be an integer", what="GHCB MSR value")
            if not 0 <= value < (1 << (hi - lo + 1)):
                raise FormatError(
                    f"{self.NAME}: {name} {value:#x} does not fit in bits {hi}:{lo}",
                    what="GHCB MSR value",
                )
        reserved = getattr(self, "reserved", 0)
        if not isinstance(reserved, int) or reserved & ~self.reserved_mask():
            raise FormatError(f"{self.NAME}: reserved bits outside the reserved mask", what="GHCB MSR value")

    def __post_init__(self) -> None:
        self._check()

    @property
    def code(self) -> int:
        return self.CODE

    def encode(self) -> int:
        value = self.CODE
        for name, lo, _hi in self.FIELDS:
            value |= getattr(self, name) << lo
        return value | getattr(self, "reserved", 0)

    @classmethod
    def _from_value(cls, value: int) -> MsrMessage:
        kwargs: dict[str, int] = {}
        for name, lo, hi in cls.FIELDS:
            kwargs[name] = (value & _mask(lo, hi)) >> lo
        kwargs["reserved"] = value & cls.reserved_mask()
        return cls(**kwargs)

    def details(self) -> list[tuple[str, str]]:
        return [(name, f"{getattr(self, name):#x}") for name, _, _ in self.FIELDS]

    def explain(self) -> list[tuple[str, str]]:
        """(label, text) lines for a person: what the value is, each field, and any problem."""
        lines = [("GHCBInfo", f"{self.CODE:#05x} {self.NAME} ({self.DIRECTION})")]
        lines += self.details()
        reserved = getattr(self, "reserved", 0)
        if reserved:
            lines.append(("WARNING", f"reserved bits set: {reserved:#x} (must be zero)"))
        return lines

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": f"{self.encode():#018x}",
            "info": self.CODE,
            "kind": type(self).__name__,
            "name": self.NAME,
            "direction": self.DIRECTION,
            "fields": {name: getattr(self, name) for name, _, _ in self.FIELDS},
            "reserved": getattr(self, "reserved", 0),
        }
        return out


@dataclass(frozen=True, slots=True)
class GhcbGpa(MsrMessage):
    """GHCBInfo 0: the MSR holds the (page-aligned) guest-physical address of the GHCB page."""

    gfn: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x000
    NAME: ClassVar[str] = "GHCB page address"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("gfn", 12, 63),)

    @property
    def gpa(self) -> int:
        return self.gfn << 12

    def details(self) -> list[tuple[str, str]]:
        return [("GHCB GPA", f"{self.gpa:#x}")]


@dataclass(frozen=True, slots=True)
class SevInfoResponse(MsrMessage):
    max_protocol: int = 0
    min_protocol: int = 0
    cbit: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x001
    NAME: ClassVar[str] = "SEV information response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (
        ("max_protocol", 48, 63),
        ("min_protocol", 32, 47),
        ("cbit", 24, 31),
    )

    def details(self) -> list[tuple[str, str]]:
        lines = [
            ("protocol", f"versions {self.min_protocol}..{self.max_protocol} supported by the hypervisor"),
            ("C-bit", f"position {self.cbit}"),
        ]
        if self.min_protocol > self.max_protocol:
            lines.append(("WARNING", "minimum protocol version is above the maximum"))
        elif self.max_protocol < PROTOCOL_MIN or self.min_protocol > PROTOCOL_MAX:
            lines.append(
                ("WARNING", f"no overlap with the versions the spec defines ({PROTOCOL_MIN}..{PROTOCOL_MAX})")
            )
        return lines


@dataclass(frozen=True, slots=True)
class SevInfoRequest(MsrMessage):
    reserved: int = 0
    CODE: ClassVar[int] = 0x002
    NAME: ClassVar[str] = "SEV information request"
    DIRECTION: ClassVar[str] = "guest"


@dataclass(frozen=True, slots=True)
class CpuidRequest(MsrMessage):
    function: int = 0
    register: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x004
    NAME: ClassVar[str] = "CPUID request"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("function", 32, 63), ("register", 30, 31))

    def details(self) -> list[tuple[str, str]]:
        return [("CPUID function", f"{self.function:#x}"), ("register", _CPUID_REGS[self.register])]


@dataclass(frozen=True, slots=True)
class CpuidResponse(MsrMessage):
    value: int = 0
    register: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x005
    NAME: ClassVar[str] = "CPUID response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("value", 32, 63), ("register", 30, 31))

    def details(self) -> list[tuple[str, str]]:
        return [("register", _CPUID_REGS[self.register]), ("value", f"{self.value:#010x}")]


@dataclass(frozen=True, slots=True)
class ApResetHoldRequest(MsrMessage):
    reserved: int = 0
    CODE: ClassVar[int] = 0x006
    NAME: ClassVar[str] = "AP reset hold request"
    DIRECTION: ClassVar[str] = "guest"


@dataclass(frozen=True, slots=True)
class ApResetHoldResponse(MsrMessage):
    result: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x007
    NAME: ClassVar[str] = "AP reset hold response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("result", 12, 63),)

    def details(self) -> list[tuple[str, str]]:
        what = "the AP was released (woken by INIT-SIPI)" if self.result else "the AP is still held"
        return [("result", f"{self.result:#x}: {what}")]


@dataclass(frozen=True, slots=True)
class PreferredGpaRequest(MsrMessage):
    reserved: int = 0
    CODE: ClassVar[int] = 0x010
    NAME: ClassVar[str] = "preferred GHCB GPA request"
    DIRECTION: ClassVar[str] = "guest"


@dataclass(frozen=True, slots=True)
class PreferredGpaResponse(MsrMessage):
    gfn: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x011
    NAME: ClassVar[str] = "preferred GHCB GPA response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("gfn", 12, 63),)

    def details(self) -> list[tuple[str, str]]:
        if self.gfn == PREF_GPA_NONE:
            return [("preferred GPA", "none (the hypervisor has no preference)")]
        return [("preferred GPA", f"{self.gfn << 12:#x} (GFN {self.gfn:#x})")]


@dataclass(frozen=True, slots=True)
class RegisterGpaRequest(MsrMessage):
    gfn: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x012
    NAME: ClassVar[str] = "register GHCB GPA request"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("gfn", 12, 63),)

    def details(self) -> list[tuple[str, str]]:
        return [("GHCB GPA", f"{self.gfn << 12:#x} (GFN {self.gfn:#x})")]


@dataclass(frozen=True, slots=True)
class RegisterGpaResponse(MsrMessage):
    gfn: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x013
    NAME: ClassVar[str] = "register GHCB GPA response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("gfn", 12, 63),)

    def details(self) -> list[tuple[str, str]]:
        return [
            ("GHCB GPA", f"{self.gfn << 12:#x} (GFN {self.gfn:#x})"),
            ("note", "registration succeeded only if this equals the GFN the guest asked for"),
        ]


@dataclass(frozen=True, slots=True)
class PageStateChangeRequest(MsrMessage):
    gfn: int = 0
    operation: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x014
    NAME: ClassVar[str] = "SNP page state change request"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("gfn", 12, 51), ("operation", 52, 55))

    def details(self) -> list[tuple[str, str]]:
        op = _PSC_OPS.get(self.operation, "unknown operation")
        lines = [
            ("page", f"GPA {self.gfn << 12:#x} (GFN {self.gfn:#x})"),
            ("operation", f"{self.operation}: {op}"),
        ]
        if self.operation not in _PSC_OPS:
            lines.append(("WARNING", f"operation {self.operation} is not defined (1 private, 2 shared)"))
        return lines


@dataclass(frozen=True, slots=True)
class PageStateChangeResponse(MsrMessage):
    error: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x015
    NAME: ClassVar[str] = "SNP page state change response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("error", 32, 63),)

    def details(self) -> list[tuple[str, str]]:
        return [("error code", f"{self.error:#x}" + (" (success)" if self.error == 0 else " (failed)"))]


@dataclass(frozen=True, slots=True)
class RunVmplRequest(MsrMessage):
    vmpl: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x016
    NAME: ClassVar[str] = "SNP run at VMPL request"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("vmpl", 32, 39),)

    def details(self) -> list[tuple[str, str]]:
        lines = [("VMPL", str(self.vmpl))]
        if self.vmpl > 3:
            lines.append(("WARNING", "VMPLs are 0-3"))
        return lines


@dataclass(frozen=True, slots=True)
class RunVmplResponse(MsrMessage):
    error: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x017
    NAME: ClassVar[str] = "SNP run at VMPL response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("error", 32, 63),)

    def details(self) -> list[tuple[str, str]]:
        return [("error code", f"{self.error:#x}" + (" (success)" if self.error == 0 else " (failed)"))]


@dataclass(frozen=True, slots=True)
class HvFeaturesRequest(MsrMessage):
    reserved: int = 0
    CODE: ClassVar[int] = 0x080
    NAME: ClassVar[str] = "hypervisor features request"
    DIRECTION: ClassVar[str] = "guest"


@dataclass(frozen=True, slots=True)
class HvFeaturesResponse(MsrMessage):
    features: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x081
    NAME: ClassVar[str] = "hypervisor features response"
    DIRECTION: ClassVar[str] = "hypervisor"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("features", 12, 63),)

    def feature_names(self) -> list[str]:
        return [HV_FEATURES.get(bit, f"bit {bit} (unknown)") for bit in range(52) if self.features >> bit & 1]

    def details(self) -> list[tuple[str, str]]:
        names = self.feature_names()
        return [("features", f"{self.features:#x}: " + (", ".join(names) if names else "none"))]


@dataclass(frozen=True, slots=True)
class TerminationRequest(MsrMessage):
    reason_set: int = 0
    reason_code: int = 0
    reserved: int = 0
    CODE: ClassVar[int] = 0x100
    NAME: ClassVar[str] = "termination request"
    DIRECTION: ClassVar[str] = "guest"
    FIELDS: ClassVar[tuple[tuple[str, int, int], ...]] = (("reason_set", 12, 15), ("reason_code", 16, 23))

    @property
    def reason(self) -> str:
        return _TERM_REASONS.get(self.reason_set, {}).get(self.reason_code, "unknown reason code")

    def details(self) -> list[tuple[str, str]]:
        return [
            ("reason set", f"{self.reason_set}: {_TERM_SETS.get(self.reason_set, 'guest/vendor defined')}"),
            ("reason code", f"{self.reason_code:#x}: {self.reason}"),
        ]


@dataclass(frozen=True, slots=True)
class UnknownMsr(MsrMessage):
    """A GHCBInfo value this codec does not know; GHCBData is kept whole."""

    info: int = 0
    data: int = 0
    NAME: ClassVar[str] = "unknown GHCBInfo"
    DIRECTION: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        if not 0 <= self.info <= _INFO_MASK or not 0 <= self.data < (1 << 52):
            raise FormatError("unknown GHCB MSR message out of range", what="GHCB MSR value")

    @property
    def code(self) -> int:
        return self.info

    def encode(self) -> int:
        return self.info | self.data << 12

    def explain(self) -> list[tuple[str, str]]:
        return [
            ("GHCBInfo", f"{self.info:#05x} (not defined by the GHCB spec this tool knows)"),
            ("GHCBData", f"{self.data:#x}"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "value": f"{self.encode():#018x}",
            "info": self.info,
            "kind": "UnknownMsr",
            "name": self.NAME,
            "direction": self.DIRECTION,
            "fields": {"data": self.data},
            "reserved": 0,
        }


_MSR_TYPES: dict[int, type[MsrMessage]] = {
    cls.CODE: cls
    for cls in (
        GhcbGpa,
        SevInfoResponse,
        SevInfoRequest,
        CpuidRequest,
        CpuidResponse,
        ApResetHoldRequest,
        ApResetHoldResponse,
        PreferredGpaRequest,
        PreferredGpaResponse,
        RegisterGpaRequest,
        RegisterGpaResponse,
        PageStateChangeRequest,
        PageStateChangeResponse,
        RunVmplRequest,
        RunVmplResponse,
        HvFeaturesRequest,
        HvFeaturesResponse,
        TerminationRequest,
    )
}


def decode_msr(value: int) -> MsrMessage:
    """Decode a 64-bit GHCB MSR value. Any u64 decodes; unknown GHCBInfo gives :class:`UnknownMsr`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError("a GHCB MSR value is an integer", what="GHCB MSR value")
    if not 0 <= value <= _U64:
        raise FormatError(f"{value:#x} is not a 64-bit value", what="GHCB MSR value")
    info = value & _INFO_MASK
    cls = _MSR_TYPES.get(info)
    if cls is None:
        return UnknownMsr(info=info, data=value >> 12)
    return cls._from_value(value)


# ---------------------------------------------------------------------------------------------
# GHCB page
# ---------------------------------------------------------------------------------------------

# name -> (offset, size in bytes). The valid-bitmap index of a field is offset // 8.
SAVE_FIELDS: dict[str, tuple[int, int]] = {
    "cpl": (0x0CB, 1),
    "xss": (0x140, 8),
    "dr7": (0x160, 8),
    "rip": (0x178, 8),
    "rsp": (0x1D8, 8),
    "rax": (0x1F8, 8),
    "rcx": (0x308, 8),
    "rdx": (0x310, 8),
    "rbx": (0x318, 8),
    "rbp": (0x328, 8),
    "rsi": (0x330, 8),
    "rdi": (0x338, 8),
    "r8": (0x340, 8),
    "r9": (0x348, 8),
    "r10": (0x350, 8),
    "r11": (0x358, 8),
    "r12": (0x360, 8),
    "r13": (0x368, 8),
    "r14": (0x370, 8),
    "r15": (0x378, 8),
    "sw_exit_code": (0x390, 8),
    "sw_exit_info_1": (0x398, 8),
    "sw_exit_info_2": (0x3A0, 8),
    "sw_scratch": (0x3A8, 8),
    "xcr0": (0x3E8, 8),
}
VALID_BITMAP_OFFSET = 0x3F0
X87_STATE_GPA_OFFSET = 0x400
SHARED_BUFFER_OFFSET = 0x800
SHARED_BUFFER_SIZE = 2032
PROTOCOL_VERSION_OFFSET = 0xFFA
USAGE_OFFSET = 0xFFC
_USAGES = {0: "standard GHCB", 1: "Hyper-V hypercall page (Hyper-V isolation VMs)"}


def _reserved_ranges() -> tuple[tuple[int, int], ...]:
    """(offset, length) of every byte range of the page that no field names."""
    used = bytearray(GHCB_SIZE)
    spans = [*SAVE_FIELDS.values(), (VALID_BITMAP_OFFSET, 16), (X87_STATE_GPA_OFFSET, 8)]
    spans += [(SHARED_BUFFER_OFFSET, SHARED_BUFFER_SIZE), (PROTOCOL_VERSION_OFFSET, 2), (USAGE_OFFSET, 4)]
    for off, size in spans:
        used[off : off + size] = b"\1" * size
    ranges: list[tuple[int, int]] = []
    start = None
    for i in range(GHCB_SIZE + 1):
        free = i < GHCB_SIZE and not used[i]
        if free and start is None:
            start = i
        elif not free and start is not None:
            ranges.append((start, i - start))
            start = None
    return tuple(ranges)


_RESERVED_RANGES = _reserved_ranges()
_BITMAP_INDEX = {name: off // 8 for name, (off, _) in SAVE_FIELDS.items()}


@dataclass(frozen=True, slots=True)
class Ghcb:
    """A decoded GHCB page. ``registers`` holds every save-area field whether valid or not;
    ``valid_bitmap`` is the raw 128-bit bitmap; ``reserved`` maps the offset of each reserved range
    that is not all zero to its bytes (kept so that any page re-encodes exactly)."""

    registers: Mapping[str, int] = field(default_factory=dict)
    valid_bitmap: int = 0
    x87_state_gpa: int = 0
    shared_buffer: bytes = bytes(SHARED_BUFFER_SIZE)
    protocol_version: int = 0
    usage: int = 0
    reserved: Mapping[int, bytes] = field(default_factory=dict)

    WHAT: ClassVar[str] = "GHCB page"

    def __post_init__(self) -> None:
        for name, value in self.registers.items():
            if name not in SAVE_FIELDS:
                raise FormatError(f"GHCB page: no save-area field named {name!r}", what=self.WHAT)
            size = SAVE_FIELDS[name][1]
            if not isinstance(value, int) or not 0 <= value < (1 << (8 * size)):
                raise FormatError(f"GHCB page: {name} does not fit in {size} bytes", what=self.WHAT)
        if not 0 <= self.valid_bitmap < (1 << 128):
            raise FormatError("GHCB page: valid bitmap is 128 bits", what=self.WHAT)
        if len(self.shared_buffer) != SHARED_BUFFER_SIZE:
            raise FormatError(f"GHCB page: shared buffer is {SHARED_BUFFER_SIZE} bytes", what=self.WHAT)
        if not 0 <= self.protocol_version <= 0xFFFF or not 0 <= self.usage <= 0xFFFF_FFFF:
            raise FormatError("GHCB page: protocol version is u16, usage u32", what=self.WHAT)
        if not 0 <= self.x87_state_gpa <= _U64:
            raise FormatError("GHCB page: x87 state GPA is u64", what=self.WHAT)
        ranges = dict(_RESERVED_RANGES)
        for off, data in self.reserved.items():
            if ranges.get(off) != len(data):
                raise FormatError(
                    f"GHCB page: no reserved range of {len(data)} bytes at {off:#x}", what=self.WHAT
                )

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        valid: Mapping[str, int],
        protocol_version: int = PROTOCOL_MAX,
        usage: int = 0,
        shared_buffer: bytes = b"",
    ) -> Ghcb:
        """A page with the given fields set and marked valid (what a guest does before VMGEXIT)."""
        bitmap = 0
        for name in valid:
            if name not in _BITMAP_INDEX:
                raise FormatError(f"GHCB page: no save-area field named {name!r}", what=cls.WHAT)
            bitmap |= 1 << _BITMAP_INDEX[name]
        if len(shared_buffer) > SHARED_BUFFER_SIZE:
            raise FormatError("GHCB page: shared buffer data too long", what=cls.WHAT)
        return cls(
            registers=dict(valid),
            valid_bitmap=bitmap,
            shared_buffer=shared_buffer.ljust(SHARED_BUFFER_SIZE, b"\0"),
            protocol_version=protocol_version,
            usage=usage,
        )

    # -- codec --------------------------------------------------------------------------------
    @classmethod
    def decode(cls, page: bytes) -> Ghcb:
        if not isinstance(page, bytes | bytearray | memoryview):
            raise FormatError("a GHCB page is bytes", what=cls.WHAT)
        page = bytes(page)
        if len(page) != GHCB_SIZE:
            raise FormatError(f"a GHCB page is {GHCB_SIZE} bytes, not {len(page)}", what=cls.WHAT)
        registers = {
            name: int.from_bytes(page[off : off + size], "little")
            for name, (off, size) in SAVE_FIELDS.items()
        }
        reserved = {
            off: page[off : off + size] for off, size in _RESERVED_RANGES if any(page[off : off + size])
        }
        return cls(
            registers=registers,
            valid_bitmap=int.from_bytes(page[VALID_BITMAP_OFFSET : VALID_BITMAP_OFFSET + 16], "little"),
            x87_state_gpa=int.from_bytes(page[X87_STATE_GPA_OFFSET : X87_STATE_GPA_OFFSET + 8], "little"),
            shared_buffer=page[SHARED_BUFFER_OFFSET : SHARED_BUFFER_OFFSET + SHARED_BUFFER_SIZE],
            protocol_version=struct.unpack_from("<H", page, PROTOCOL_VERSION_OFFSET)[0],
            usage=struct.unpack_from("<I", page, USAGE_OFFSET)[0],
            reserved=reserved,
        )

    def encode(self) -> bytes:
        page = bytearray(GHCB_SIZE)
        for name, value in self.registers.items():
            off, size = SAVE_FIELDS[name]
            page[off : off + size] = value.to_bytes(size, "little")
        page[VALID_BITMAP_OFFSET : VALID_BITMAP_OFFSET + 16] = self.valid_bitmap.to_bytes(16, "little")
        page[X87_STATE_GPA_OFFSET : X87_STATE_GPA_OFFSET + 8] = self.x87_state_gpa.to_bytes(8, "little")
        page[SHARED_BUFFER_OFFSET : SHARED_BUFFER_OFFSET + SHARED_BUFFER_SIZE] = self.shared_buffer
        struct.pack_into("<H", page, PROTOCOL_VERSION_OFFSET, self.protocol_version)
        struct.pack_into("<I", page, USAGE_OFFSET, self.usage)
        for off, data in self.reserved.items():
            page[off : off + len(data)] = data
        return bytes(page)

    # -- reading ------------------------------------------------------------------------------
    def get(self, name: str) -> int:
        return self.registers.get(name, 0)

    def is_valid(self, name: str) -> bool:
        return bool(self.valid_bitmap >> _BITMAP_INDEX[name] & 1)

    def valid_fields(self) -> list[str]:
        return [name for name in SAVE_FIELDS if self.is_valid(name)]

    def unknown_valid_bits(self) -> list[int]:
        """Bitmap bits set for quadwords that hold no named field (reserved save-area space)."""
        known = set(_BITMAP_INDEX.values())
        return [bit for bit in range(128) if self.valid_bitmap >> bit & 1 and bit not in known]

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "usage": self.usage,
            "valid": {name: f"{self.get(name):#x}" for name in self.valid_fields()},
            "valid_bitmap": f"{self.valid_bitmap:#034x}",
            "x87_state_gpa": f"{self.x87_state_gpa:#x}",
            "shared_buffer_nonzero_bytes": sum(1 for b in self.shared_buffer if b),
            "reserved_nonzero": [f"{off:#x}" for off in sorted(self.reserved)],
        }


# ---------------------------------------------------------------------------------------------
# NAE events: which state goes in and comes back
# ---------------------------------------------------------------------------------------------

Condition = Callable[[Ghcb], bool]


@dataclass(frozen=True, slots=True)
class Need:
    """One save-area field an event needs, optionally only when ``when(page)`` holds."""

    field: str
    when: Condition | None = None
    why: str = ""

    def applies(self, page: Ghcb) -> bool:
        return self.when is None or self.when(page)

    def describe(self) -> str:
        return self.field.upper() + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class NaeEvent:
    code: int
    name: str
    inputs: tuple[Need, ...]
    outputs: tuple[Need, ...]
    notes: str = ""


def _info1_low(page: Ghcb) -> int:
    return page.get("sw_exit_info_1") & 0xFFFF_FFFF


def _n(name: str, when: Condition | None = None, why: str = "") -> Need:
    return Need(name, when, why)


_IOIO_IN = 1  # SW_EXITINFO1 bit 0: 1 = IN, 0 = OUT
_IOIO_STR = 1 << 2  # bit 2: string instruction


def _ioio_string(p: Ghcb) -> bool:
    return bool(p.get("sw_exit_info_1") & _IOIO_STR)


def _ioio_out_not_string(p: Ghcb) -> bool:
    return not p.get("sw_exit_info_1") & (_IOIO_STR | _IOIO_IN)


def _ioio_in_not_string(p: Ghcb) -> bool:
    info = p.get("sw_exit_info_1")
    return bool(info & _IOIO_IN) and not info & _IOIO_STR


def _msr_write(p: Ghcb) -> bool:
    return _info1_low(p) == 1


def _msr_read(p: Ghcb) -> bool:
    return _info1_low(p) == 0


def _cpuid_0xd(p: Ghcb) -> bool:
    return p.get("rax") & 0xFFFF_FFFF == 0xD


_NAE_LIST: tuple[NaeEvent, ...] = (
    NaeEvent(0x027, "DR7 read", (), (_n("rax"),)),
    NaeEvent(0x037, "DR7 write", (_n("rax"),), ()),
    NaeEvent(0x06E, "RDTSC", (), (_n("rax"), _n("rdx"))),
    NaeEvent(0x06F, "RDPMC", (_n("rcx"),), (_n("rax"), _n("rdx"))),
    NaeEvent(
        0x072,
        "CPUID",
        (_n("rax"), _n("rcx"), _n("xcr0", _cpuid_0xd, "when RAX=0xD")),
        (_n("rax"), _n("rbx"), _n("rcx"), _n("rdx")),
        "with CPUID 0xD sub-leaf 1 the guest also passes XSS where it supports it",
    ),
    NaeEvent(0x076, "INVD", (), ()),
    NaeEvent(
        0x07B,
        "IOIO",
        (
            _n("rax", _ioio_out_not_string, "OUT, not a string instruction"),
            _n("sw_scratch", _ioio_string, "string instruction: buffer in the shared buffer"),
        ),
        (_n("rax", _ioio_in_not_string, "IN, not a string instruction"),),
        "SW_EXITINFO1 carries the IOIO information (port, size, IN/OUT, string, REP)",
    ),
    NaeEvent(
        0x07C,
        "MSR",
        (
            _n("rcx"),
            _n("rax", _msr_write, "write (SW_EXITINFO1=1)"),
            _n("rdx", _msr_write, "write (SW_EXITINFO1=1)"),
        ),
        (_n("rax", _msr_read, "read (SW_EXITINFO1=0)"), _n("rdx", _msr_read, "read (SW_EXITINFO1=0)")),
        "SW_EXITINFO1: 0 = RDMSR, 1 = WRMSR",
    ),
    NaeEvent(0x081, "VMMCALL", (_n("rax"), _n("cpl")), (_n("rax"),), "hypercall-specific registers as well"),
    NaeEvent(0x087, "RDTSCP", (), (_n("rax"), _n("rcx"), _n("rdx"))),
    NaeEvent(0x089, "WBINVD", (), ()),
    NaeEvent(0x08A, "MONITOR", (_n("rax"), _n("rcx"), _n("rdx")), ()),
    NaeEvent(0x08B, "MWAIT", (_n("rax"), _n("rcx")), ()),
    NaeEvent(
        0x8000_0001,
        "MMIO read",
        (_n("sw_scratch"),),
        (),
        "SW_EXITINFO1 = GPA, SW_EXITINFO2 = length; data returns in the scratch buffer",
    ),
    NaeEvent(
        0x8000_0002,
        "MMIO write",
        (_n("sw_scratch"),),
        (),
        "SW_EXITINFO1 = GPA, SW_EXITINFO2 = length; data is in the scratch buffer",
    ),
    NaeEvent(0x8000_0003, "NMI complete", (), ()),
    NaeEvent(0x8000_0004, "AP HLT loop", (), (), "SW_EXITINFO2 returns non-zero when the AP was woken"),
    NaeEvent(
        0x8000_0005,
        "AP jump table",
        (),
        (),
        "SW_EXITINFO1: 0 = set (SW_EXITINFO2 = table GPA), 1 = get (returned in SW_EXITINFO2)",
    ),
    NaeEvent(
        0x8000_0010,
        "SNP page state change",
        (_n("sw_scratch"),),
        (),
        "the PSC descriptor is in the shared buffer; SW_EXITINFO2 returns the status",
    ),
    NaeEvent(
        0x8000_0011,
        "SNP guest request",
        (),
        (),
        "SW_EXITINFO1 = request page GPA, SW_EXITINFO2 = response page GPA",
    ),
    NaeEvent(
        0x8000_0012,
        "SNP extended guest request",
        (_n("rax"), _n("rbx")),
        (),
        "RAX = certificate buffer GPA, RBX = its pages; RBX returns the pages needed if too small",
    ),
    NaeEvent(
        0x8000_0013,
        "SNP AP creation",
        (_n("rax", lambda p: _info1_low(p) != 2, "create (not destroy): SEV features"),),
        (),
        "SW_EXITINFO1[31:0] = 0 create on INIT, 1 create, 2 destroy; [63:32] = APIC ID; "
        "SW_EXITINFO2 = VMSA GPA",
    ),
    NaeEvent(0x8000_0014, "SNP #HV doorbell page", (), (), "SW_EXITINFO1 = operation, SW_EXITINFO2 = GPA"),
    NaeEvent(0x8000_0015, "SNP #HV IPI", (), ()),
    NaeEvent(0x8000_0016, "SNP #HV timer", (), ()),
    NaeEvent(
        0x8000_0017,
        "APIC ID list",
        (_n("rax"),),
        (),
        "SW_EXITINFO1 = GPA of the list buffer, RAX = its pages (RAX returns the pages needed)",
    ),
    NaeEvent(0x8000_0018, "SNP run at VMPL", (), (), "SW_EXITINFO1 = VMPL"),
    NaeEvent(0x8000_001A, "Secure AVIC", (), (), "SW_EXITINFO1 = operation"),
    NaeEvent(0x8000_FFFD, "hypervisor features", (), (), "SW_EXITINFO2 returns the feature bitmap"),
    NaeEvent(0x8000_FFFE, "termination request", (), (), "SW_EXITINFO1 carries the reason set and code"),
    NaeEvent(0x8000_FFFF, "unsupported event", (), (), "SW_EXITINFO1/2 describe the event"),
)
NAE_EVENTS: dict[int, NaeEvent] = {event.code: event for event in _NAE_LIST}
# Every NAE request carries these (the spec requires them valid in every event).
_ALWAYS_IN = ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2")
_RESULTS = {
    0: "success",
    1: "the hypervisor asks the guest to take an exception (SW_EXITINFO2 = event injection)",
    2: "the hypervisor rejected the GHCB input (SW_EXITINFO2 = reason)",
}
GHCB_INPUT_ERRORS = {
    1: "GHCB not registered",
    2: "invalid GHCB usage",
    3: "invalid scratch area",
    4: "missing input",
    5: "invalid input",
    6: "invalid event",
}


def nae_event(code: int) -> NaeEvent | None:
    return NAE_EVENTS.get(code)


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    message: str

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity, "message": self.message}


def check_page(
    page: Ghcb,
    *,
    direction: str = "request",
    request: Ghcb | None = None,
    ghcb_gpa: int | None = None,
) -> list[Finding]:
    """What is wrong or missing in a GHCB page for the NAE event its SW_EXITCODE names.

    ``direction="request"``: the page as the guest hands it to the hypervisor (inputs must be valid).
    ``direction="response"``: the page as the hypervisor returns it (outputs must be valid).
    Conditions such as "MSR write" are read from ``request`` when given, else from ``page``.
    With ``ghcb_gpa`` (the page's guest-physical address), SW_SCRATCH must point into its shared buffer.
    """
    if direction not in ("request", "response"):
        raise ValueError(f"direction must be 'request' or 'response', not {direction!r}")
    findings: list[Finding] = []
    if not PROTOCOL_MIN <= page.protocol_version <= PROTOCOL_MAX:
        findings.append(
            Finding(
                "warning",
                f"protocol version {page.protocol_version} is outside {PROTOCOL_MIN}..{PROTOCOL_MAX}",
            )
        )
    if page.usage != 0:
        findings.append(
            Finding("warning", f"GHCB usage {page.usage:#x}: {_USAGES.get(page.usage, 'unknown usage')}")
        )
    stray = page.unknown_valid_bits()
    if stray:
        findings.append(
            Finding(
                "warning", "valid bits set for reserved save-area quadwords: " + ", ".join(map(str, stray))
            )
        )
    if page.reserved:
        offsets = ", ".join(f"{off:#x}" for off in sorted(page.reserved))
        findings.append(Finding("warning", f"reserved bytes are not zero at {offsets}"))
    if direction == "request":
        for name in _ALWAYS_IN:
            if not page.is_valid(name):
                findings.append(
                    Finding("error", f"{name.upper()} is not marked valid (every NAE event needs it)")
                )
    code = page.get("sw_exit_code")
    event = NAE_EVENTS.get(code)
    if event is None:
        findings.append(Finding("error", f"SW_EXITCODE {code:#x} is not an NAE event this tool knows"))
        return findings
    basis = request if request is not None else page
    needs = event.inputs if direction == "request" else event.outputs
    for need in needs:
        if need.applies(basis) and not page.is_valid(need.field):
            side = "the hypervisor needs" if direction == "request" else "the guest expects back"
            findings.append(Finding("error", f"{event.name}: {side} {need.describe()}, not marked valid"))
    if direction == "response":
        if not page.is_valid("sw_exit_info_1"):
            findings.append(Finding("error", "SW_EXITINFO1 (the result) is not marked valid"))
        else:
            result = page.get("sw_exit_info_1") & 0xFFFF_FFFF
            if result not in _RESULTS:
                findings.append(Finding("error", f"SW_EXITINFO1 result {result} is not 0, 1 or 2"))
            elif result != 0:
                detail = _RESULTS[result]
                if result == 2:
                    reason = page.get("sw_exit_info_2")
                    detail += f": {GHCB_INPUT_ERRORS.get(reason, f'unknown reason {reason:#x}')}"
                findings.append(Finding("warning", detail))
    if ghcb_gpa is not None and page.is_valid("sw_scratch") and direction == "request":
        scratch = page.get("sw_scratch")
        lo = ghcb_gpa + SHARED_BUFFER_OFFSET
        hi = lo + SHARED_BUFFER_SIZE
        if not lo <= scratch < hi:
            findings.append(
                Finding(
                    "warning",
                    f"SW_SCRATCH {scratch:#x} is outside this GHCB's shared buffer [{lo:#x}, {hi:#x})",
                )
            )
    return findings


def explain_page(page: Ghcb) -> list[tuple[str, str]]:
    """(label, text) lines describing a page: the event, its valid state and its header."""
    code = page.get("sw_exit_code")
    event = NAE_EVENTS.get(code)
    lines = [
        ("protocol version", str(page.protocol_version)),
        ("usage", f"{page.usage:#x} ({_USAGES.get(page.usage, 'unknown')})"),
        ("SW_EXITCODE", f"{code:#x} ({event.name if event else 'unknown event'})"),
    ]
    if event is not None:
        ins = ", ".join(n.describe() for n in event.inputs) or "nothing beyond SW_EXIT*"
        outs = ", ".join(n.describe() for n in event.outputs) or "no registers"
        lines.append(("event needs", ins))
        lines.append(("event returns", outs))
        if event.notes:
            lines.append(("note", event.notes))
    for name in page.valid_fields():
        lines.append((f"valid {name}", f"{page.get(name):#x}"))
    return lines
