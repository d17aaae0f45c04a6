"""Launch digests for SEV, SEV-ES and SEV-SNP guests, and the SEV launch measurement.

SEV / SEV-ES (AMD SEV API #55766, LAUNCH_UPDATE_DATA / LAUNCH_UPDATE_VMSA / LAUNCH_MEASURE):
    GCTX.LD = SHA-256(firmware || kernel hashes table (if a kernel is given) || VMSA per vCPU (SEV-ES))
    MEASURE = HMAC-SHA256(key=TIK, 0x04 || API_MAJOR || API_MINOR || BUILD || POLICY (u32 LE)
                          || GCTX.LD || MNONCE)
    QEMU's query-sev-launch-measure returns base64(MEASURE || MNONCE) (48 bytes).

SEV-SNP (SNP ABI #56860 §8.17, SNP_LAUNCH_UPDATE): the digest is a chain. Each measured page updates
    LD = SHA-384(PAGE_INFO) where PAGE_INFO (0x70 bytes) = LD || CONTENTS (48) || u16 0x70
         || u8 PAGE_TYPE || u8 IMI_PAGE || u8 VMPL3_PERMS || u8 VMPL2_PERMS || u8 VMPL1_PERMS || u8 0
         || u64 GPA
    CONTENTS is SHA-384 of the page for NORMAL and VMSA pages, zeros for the others. In launch order:
    the OVMF pages (NORMAL, at 4 GiB - size), the OVMF SEV metadata sections (SEC_MEM: ZERO, or
    UNMEASURED under GCE; SECRETS; CPUID (last of all under EC2); SVSM_CAA: ZERO; KERNEL_HASHES: the
    page holding the hashes table, NORMAL, or ZERO without a kernel), then one VMSA per vCPU at GPA
    0xFFFFFFFFF000. The "OVMF hash" is the LD after the OVMF pages only: it can seed the rest.

Pure: everything here takes bytes and values. :func:`sha256_stream` hashes an iterable of chunks so
that the edges can feed large files without holding them whole.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sevbox.errors import FormatError, UsageError
from sevbox.sev import hashes as H
from sevbox.sev.ovmf import Ovmf, SectionType
from sevbox.sev.vmsa import FpuInit, VmmType, VmsaState, vmsa_pages

__all__ = [
    "LD_SNP_SIZE",
    "SNP_VMSA_GPA",
    "Mode",
    "PageType",
    "SevLaunchInfo",
    "SnpLaunchDigest",
    "launch_measurement",
    "measurement_matches",
    "sev_digest",
    "sev_launch_digest",
    "sev_measured_vmsas",
    "seves_digest",
    "sha256_stream",
    "snp_digest",
    "snp_ovmf_hash",
    "split_measurement",
]

PAGE = 4096
LD_SNP_SIZE = 48
SNP_VMSA_GPA = 0xFFFFFFFFF000  # (u64)-1, page-aligned, bits above 51 clear
_WHAT = "OVMF firmware"
# Real firmware declares well under 1 MiB of SEV metadata sections; a forged image could declare
# 4 GiB per section (a million PAGE_INFO updates each). Refuse instead of hanging.
_MAX_METADATA_BYTES = 256 << 20


class Mode(enum.Enum):
    """Guest modes, spelled as sev-snp-measure's --mode."""

    SEV = "sev"
    SEV_ES = "seves"
    SNP = "snp"
    SNP_OVMF_HASH = "snp:ovmf-hash"


class PageType(enum.IntEnum):
    """SNP PAGE_INFO page types (SNP ABI, SNP_LAUNCH_UPDATE)."""

    NORMAL = 1
    VMSA = 2
    ZERO = 3
    UNMEASURED = 4
    SECRETS = 5
    CPUID = 6


def sha256_stream(chunks: Iterable[bytes | memoryview]) -> bytes:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.digest()


# --- SEV / SEV-ES -----------------------------------------------------------------------------


def _need_hashes_table(ovmf: Ovmf) -> None:
    if not ovmf.has_sev_hashes_table:
        raise FormatError(
            "a kernel was given but this OVMF has no SEV hashes table, so kernel, initrd and command "
            "line cannot be measured (use an AmdSev build of OVMF, or boot without --kernel)",
            what=_WHAT,
        )


def _ap_eip(ovmf: Ovmf) -> int:
    eip = ovmf.sev_es_reset_eip
    if eip is None:
        raise FormatError(
            "this OVMF has no SEV-ES reset block in its footer table: it cannot boot SEV-ES or SNP guests",
            what=_WHAT,
        )
    return eip


def sev_launch_digest(*, firmware: bytes, hashes_table: bytes = b"", vmsas: Sequence[bytes] = ()) -> bytes:
    """GCTX.LD from its parts: SHA-256(firmware || hashes table || VMSA pages), no checks."""
    h = hashlib.sha256(firmware)
    h.update(hashes_table)
    for page in vmsas:
        h.update(page)
    return h.digest()


def sev_digest(*, ovmf: Ovmf, kernel_hashes: H.KernelHashes | None = None) -> bytes:
    """SEV GCTX.LD: SHA-256 of the firmware and, with a kernel, the hashes table."""
    h = hashlib.sha256(ovmf.data)
    if kernel_hashes is not None:
        _need_hashes_table(ovmf)
        h.update(H.build_table(kernel_hashes))
    return h.digest()


def sev_measured_vmsas(*, ovmf: Ovmf, vcpus: int, state: VmsaState) -> list[bytes]:
    """The VMSA pages an SEV-ES guest's launch measures (sev_features 0)."""
    return vmsa_pages(vcpus=vcpus, ap_eip=_ap_eip(ovmf), state=state)


def seves_digest(
    *,
    ovmf: Ovmf,
    vcpus: int,
    vcpu_sig: int,
    kernel_hashes: H.KernelHashes | None = None,
    vmm_type: VmmType = VmmType.QEMU,
    fpu: FpuInit = FpuInit.CURRENT,
    vmsas: Sequence[bytes] | None = None,
) -> bytes:
    """SEV-ES GCTX.LD: firmware, hashes table, then one VMSA per vCPU (built, or given as ``vmsas``)."""
    h = hashlib.sha256(ovmf.data)
    if kernel_hashes is not None:
        _need_hashes_table(ovmf)
        h.update(H.build_table(kernel_hashes))
    if vmsas is None:
        state = VmsaState(vcpu_sig=vcpu_sig, sev_features=0, vmm_type=vmm_type, fpu=fpu)
        vmsas = sev_measured_vmsas(ovmf=ovmf, vcpus=vcpus, state=state)
    for page in vmsas:
        h.update(page)
    return h.digest()


@dataclass(frozen=True, kw_only=True)
class SevLaunchInfo:
    """What LAUNCH_MEASURE mixes in besides the digest (from query-sev / query-sev-launch-measure)."""

    api_major: int
    api_minor: int
    build_id: int
    policy: int

    def __post_init__(self) -> None:
        for name in ("api_major", "api_minor", "build_id"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise UsageError(f"{name.replace('_', '-')} must be 0..255")
        if not 0 <= self.policy <= 0xFFFFFFFF:
            raise UsageError("policy must be a 32-bit value")


def launch_measurement(*, tik: bytes, info: SevLaunchInfo, digest: bytes, mnonce: bytes) -> bytes:
    """MEASURE = HMAC-SHA256(TIK, 0x04 || major || minor || build || policy || LD || MNONCE)."""
    if len(tik) != 16 or len(digest) != 32 or len(mnonce) != 16:
        raise UsageError("TIK and MNONCE must be 16 bytes and the launch digest 32 bytes")
    msg = (
        struct.pack("<BBBBI", 0x04, info.api_major, info.api_minor, info.build_id, info.policy)
        + digest
        + mnonce
    )
    return hmac.new(tik, msg, "sha256").digest()


def split_measurement(blob: bytes) -> tuple[bytes, bytes]:
    """Split QEMU's 48-byte launch-measure blob into (MEASURE, MNONCE)."""
    if len(blob) != 48:
        raise FormatError(
            f"a launch measurement is 48 bytes (MEASURE || MNONCE), not {len(blob)}",
            what="launch measurement",
        )
    return blob[:32], blob[32:]


def measurement_matches(*, tik: bytes, info: SevLaunchInfo, digest: bytes, blob: bytes) -> bool:
    """Recompute the measurement with the blob's nonce and compare in constant time."""
    reported, mnonce = split_measurement(blob)
    expected = launch_measurement(tik=tik, info=info, digest=digest, mnonce=mnonce)
    return hmac.compare_digest(reported, expected)


# --- SNP --------------------------------------------------------------------------------------

_ZEROS48 = bytes(48)
_INFO_TAIL = struct.Struct("<HBBBBBBQ")


@dataclass
class SnpLaunchDigest:
    """The SNP launch digest chain (GCTX.LD), updated page by page as the PSP does."""

    ld: bytes = field(default=_ZEROS48)

    def __post_init__(self) -> None:
        if len(self.ld) != LD_SNP_SIZE:
            raise UsageError(f"an SNP launch digest is {LD_SNP_SIZE} bytes, not {len(self.ld)}")

    def update(self, page_type: PageType, gpa: int, contents: bytes) -> None:
        tail = _INFO_TAIL.pack(0x70, page_type, 0, 0, 0, 0, 0, gpa)
        self.ld = hashlib.sha384(self.ld + contents + tail).digest()

    def normal_pages(self, gpa: int, data: bytes | memoryview) -> None:
        if len(data) % PAGE:
            raise FormatError(f"{len(data)} bytes are not a whole number of 4 KiB pages", what=_WHAT)
        view = memoryview(data)
        sha384 = hashlib.sha384
        info = _INFO_TAIL.pack
        ld = self.ld
        for off in range(0, len(view), PAGE):
            page_hash = sha384(view[off : off + PAGE]).digest()
            ld = sha384(ld + page_hash + info(0x70, PageType.NORMAL, 0, 0, 0, 0, 0, gpa + off)).digest()
        self.ld = ld

    def _same_pages(self, page_type: PageType, gpa: int, size: int) -> None:
        if size % PAGE:
            raise FormatError(f"SEV metadata section size {size:#x} is not a multiple of 4 KiB", what=_WHAT)
        for off in range(0, size, PAGE):
            self.update(page_type, gpa + off, _ZEROS48)

    def zero_pages(self, gpa: int, size: int) -> None:
        self._same_pages(PageType.ZERO, gpa, size)

    def unmeasured_pages(self, gpa: int, size: int) -> None:
        self._same_pages(PageType.UNMEASURED, gpa, size)

    def vmsa_page(self, page: bytes) -> None:
        if len(page) != PAGE:
            raise UsageError("a VMSA page is 4096 bytes")
        self.update(PageType.VMSA, SNP_VMSA_GPA, hashlib.sha384(page).digest())


def snp_ovmf_hash(ovmf: Ovmf) -> bytes:
    """The LD after measuring only the OVMF pages (sev-snp-measure's snp:ovmf-hash)."""
    gctx = SnpLaunchDigest()
    gctx.normal_pages(ovmf.gpa, ovmf.data)
    return gctx.ld


def _snp_metadata(
    gctx: SnpLaunchDigest, ovmf: Ovmf, kernel_hashes: H.KernelHashes | None, vmm_type: VmmType
) -> None:
    total = 0
    for s in ovmf.metadata_sections:
        if not s.known:
            raise FormatError(f"unknown OVMF SEV metadata section type {s.kind:#x}", what=_WHAT)
        if s.gpa % PAGE or s.gpa + s.size > 1 << 32:
            raise FormatError(
                f"SEV metadata section at {s.gpa:#x} (+{s.size:#x}) is not page-aligned below 4 GiB",
                what=_WHAT,
            )
        total += s.size
    if total > _MAX_METADATA_BYTES:
        raise FormatError(
            f"SEV metadata sections cover {total:#x} bytes, more than any firmware needs "
            f"({_MAX_METADATA_BYTES:#x}); refusing to measure them",
            what=_WHAT,
        )
    if kernel_hashes is not None and not ovmf.has_section(SectionType.SNP_KERNEL_HASHES):
        raise FormatError(
            "a kernel was given but this OVMF's SEV metadata has no SNP_KERNEL_HASHES section, so kernel, "
            "initrd and command line cannot be measured (use an AmdSev build of OVMF)",
            what=_WHAT,
        )
    for s in ovmf.metadata_sections:
        kind = SectionType(s.kind)
        if kind is SectionType.SNP_SEC_MEM:
            if vmm_type is VmmType.GCE:
                gctx.unmeasured_pages(s.gpa, s.size)
            else:
                gctx.zero_pages(s.gpa, s.size)
        elif kind is SectionType.SNP_SECRETS:
            gctx.update(PageType.SECRETS, s.gpa, _ZEROS48)
        elif kind is SectionType.CPUID:
            if vmm_type is not VmmType.EC2:
                gctx.update(PageType.CPUID, s.gpa, _ZEROS48)
        elif kind is SectionType.SNP_KERNEL_HASHES:
            if kernel_hashes is None:
                gctx.zero_pages(s.gpa, s.size)
                continue
            table_gpa = ovmf.sev_hashes_table_gpa
            if table_gpa is None:
                raise FormatError(
                    "this OVMF has an SNP_KERNEL_HASHES section but no SEV hashes table address", what=_WHAT
                )
            if s.size != PAGE:
                raise FormatError(
                    f"the SNP_KERNEL_HASHES section is {s.size:#x} bytes, not one page", what=_WHAT
                )
            gctx.normal_pages(s.gpa, H.build_page(kernel_hashes, table_gpa & (PAGE - 1)))
        else:  # SVSM_CAA
            gctx.zero_pages(s.gpa, s.size)
    if vmm_type is VmmType.EC2:
        for s in ovmf.metadata_sections:
            if s.kind == SectionType.CPUID:
                gctx.update(PageType.CPUID, s.gpa, _ZEROS48)


def snp_digest(
    *,
    ovmf: Ovmf,
    vcpus: int,
    vcpu_sig: int,
    guest_features: int = 0x1,
    kernel_hashes: H.KernelHashes | None = None,
    vmm_type: VmmType = VmmType.QEMU,
    ovmf_hash: bytes | None = None,
    fpu: FpuInit = FpuInit.CURRENT,
) -> tuple[bytes, list[bytes]]:
    """SNP launch digest (48 bytes) and the VMSA pages it measured.

    ``ovmf_hash`` (from :func:`snp_ovmf_hash`) replaces hashing the OVMF pages: then only the image's
    tables are read (a suffix of the image is enough).
    """
    if not 0 <= guest_features < 1 << 64:
        raise UsageError("guest features must be a 64-bit value")
    if ovmf_hash is not None:
        gctx = SnpLaunchDigest(bytes(ovmf_hash))
    else:
        gctx = SnpLaunchDigest()
        gctx.normal_pages(ovmf.gpa, ovmf.data)
    _snp_metadata(gctx, ovmf, kernel_hashes, vmm_type)
    state = VmsaState(vcpu_sig=vcpu_sig, sev_features=guest_features, vmm_type=vmm_type, fpu=fpu)
    pages = vmsa_pages(vcpus=vcpus, ap_eip=_ap_eip(ovmf), state=state)
    for page in pages:
        gctx.vmsa_page(page)
    return gctx.ld, pages
