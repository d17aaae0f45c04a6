"""SEV-SNP attestation report (ATTESTATION_REPORT, 0x4A0 bytes) and TCB_VERSION.

Layout: AMD SEV-SNP ABI specification #56860, "ATTESTATION_REPORT Structure" (versions 2, 3 and 5),
"TCB_VERSION Structure" and "PLATFORM_INFO". All integers are little-endian::

    0x000  u32   VERSION             2, 3 or 5
    0x004  u32   GUEST_SVN
    0x008  u64   POLICY              the guest policy (see sevbox.sev.policy.SnpPolicy)
    0x010  16 B  FAMILY_ID
    0x020  16 B  IMAGE_ID
    0x030  u32   VMPL                the VMPL of the request
    0x034  u32   SIGNATURE_ALGO      1 = ECDSA P-384 with SHA-384
    0x038  u64   CURRENT_TCB
    0x040  u64   PLATFORM_INFO       SMT_EN, TSME_EN, ECC_EN, RAPL_DIS, CIPHERTEXT_HIDING_EN, ALIAS_CHECK...
    0x048  u32   AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2: 0 VCEK, 1 VLEK, 7 none)
    0x04C  u32   reserved
    0x050  64 B  REPORT_DATA         from the guest
    0x090  48 B  MEASUREMENT         the launch digest
    0x0C0  32 B  HOST_DATA           from the host at launch
    0x0E0  48 B  ID_KEY_DIGEST
    0x110  48 B  AUTHOR_KEY_DIGEST
    0x140  32 B  REPORT_ID
    0x160  32 B  REPORT_ID_MA        all ones when no migration agent is bound
    0x180  u64   REPORTED_TCB        the TCB the VCEK was derived from
    0x188  u8    CPUID_FAM_ID        v3+ (reserved in v2)
    0x189  u8    CPUID_MOD_ID        v3+
    0x18A  u8    CPUID_STEP          v3+
    0x18B  21 B  reserved
    0x1A0  64 B  CHIP_ID             zero when MASK_CHIP_ID was set
    0x1E0  u64   COMMITTED_TCB
    0x1E8  u8×3  CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR, then 1 reserved byte
    0x1EC  u8×3  COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR, then 1 reserved byte
    0x1F0  u64   LAUNCH_TCB
    0x1F8  u64   LAUNCH_MIT_VECTOR   v5 (reserved before)
    0x200  u64   CURRENT_MIT_VECTOR  v5
    0x208  ...   reserved up to 0x2A0
    0x2A0  512 B SIGNATURE           R (72 B, little-endian), S (72 B), 368 reserved bytes

The signature covers bytes 0x000-0x29F. Untrusted bytes are handled in two named stages, as in
pyca/cryptography's recipes: :func:`parse_report_unverified` checks only the length and the version;
:meth:`UnverifiedReport.verify` checks the signature over exactly the signed bytes and only then
decodes the fields. :meth:`UnverifiedReport.decode_unverified` exists for display (``report show``)
and its result says ``verified=False``.

TCB_VERSION is a u64 of per-component security patch levels (SPL). Milan and Genoa: byte 0 boot
loader, 1 TEE, 2-5 reserved, 6 SNP firmware, 7 microcode. Turin: byte 0 FMC, 1 boot loader, 2 TEE,
3 SNP, 4-6 reserved, 7 microcode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sevbox.errors import FormatError, VerificationError

__all__ = [
    "PRODUCTS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SUPPORTED_VERSIONS",
    "AttestationReport",
    "TcbVersion",
    "UnverifiedReport",
    "parse_report_unverified",
    "product_from_cpuid",
    "read_report_bytes",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1
_SIG_COMPONENT = 72  # R and S are 72-byte little-endian fields; P-384 uses the low 48 bytes
_P384_BYTES = 48
WHAT = "SNP attestation report"

#: Product lines whose AMD chains are known, in the spelling AMD's KDS uses.
PRODUCTS = ("Milan", "Genoa", "Turin")

SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "none"}

# PLATFORM_INFO bits (ABI #56860, "PLATFORM_INFO Field")
PLATFORM_INFO_BITS: tuple[tuple[int, str], ...] = (
    (0, "SMT_EN"),
    (1, "TSME_EN"),
    (2, "ECC_EN"),
    (3, "RAPL_DIS"),
    (4, "CIPHERTEXT_HIDING_DRAM_EN"),
    (5, "ALIAS_CHECK_COMPLETE"),
    (7, "TIO_EN"),
)


def product_from_cpuid(family: int, model: int) -> str | None:
    """The product line for a CPUID family/model (extended values, as in a v3+ report), or None.

    Family 19h models 00h-0Fh are Milan; 10h-1Fh Genoa and A0h-AFh Siena (Genoa's chain); family
    1Ah models 00h-1Fh are Turin.
    """
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A TCB_VERSION (u64) and its layout: Milan/Genoa (``turin=False``) or Turin."""

    raw: int
    turin: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.raw, bool) or not isinstance(self.raw, int) or not 0 <= self.raw < 1 << 64:
            raise FormatError(f"TCB version {self.raw!r} is not a u64", what="TCB version")

    def _byte(self, index: int) -> int:
        return self.raw >> (8 * index) & 0xFF

    @property
    def fmc(self) -> int | None:
        return self._byte(0) if self.turin else None

    @property
    def bootloader(self) -> int:
        return self._byte(1 if self.turin else 0)

    @property
    def tee(self) -> int:
        return self._byte(2 if self.turin else 1)

    @property
    def snp(self) -> int:
        return self._byte(3 if self.turin else 6)

    @property
    def microcode(self) -> int:
        return self._byte(7)

    @property
    def reserved(self) -> bytes:
        """The reserved bytes (Milan/Genoa: bytes 2-5; Turin: bytes 4-6), in order."""
        idx = range(4, 7) if self.turin else range(2, 6)
        return bytes(self._byte(i) for i in idx)

    def parts(self) -> dict[str, int]:
        """The named components, in KDS order: (fmc,) bootloader, tee, snp, microcode."""
        out: dict[str, int] = {}
        if self.turin:
            out["fmc"] = self._byte(0)
        out.update(bootloader=self.bootloader, tee=self.tee, snp=self.snp, microcode=self.microcode)
        return out

    @classmethod
    def from_parts(
        cls,
        *,
        bootloader: int,
        tee: int,
        snp: int,
        microcode: int,
        fmc: int | None = None,
        turin: bool = False,
        reserved: bytes = b"",
    ) -> TcbVersion:
        """Compose a TCB_VERSION from SPLs. ``fmc`` is Turin's; ``reserved`` fills the reserved bytes."""
        values = {"bootloader": bootloader, "tee": tee, "snp": snp, "microcode": microcode}
        if turin:
            values["fmc"] = 0 if fmc is None else fmc
        elif fmc is not None:
            raise FormatError("an FMC SPL exists only in Turin's TCB layout", what="TCB version")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise FormatError(f"TCB {name} SPL {value!r} is not 0-255", what="TCB version")
        slots = [0] * 8
        if turin:
            slots[0], slots[1], slots[2], slots[3] = values["fmc"], bootloader, tee, snp
            reserved_idx = [4, 5, 6]
        else:
            slots[0], slots[1], slots[6] = bootloader, tee, snp
            reserved_idx = [2, 3, 4, 5]
        if len(reserved) > len(reserved_idx):
            raise FormatError("too many reserved TCB bytes", what="TCB version")
        for i, b in zip(reserved_idx, reserved, strict=False):
            slots[i] = b
        slots[7] = microcode
        return cls(int.from_bytes(bytes(slots), "little"), turin)

    def meets(self, minimum: TcbVersion) -> list[str]:
        """Components below ``minimum`` as ``"snp 5 < 8"`` strings; empty when every one meets it."""
        if minimum.turin != self.turin:
            raise FormatError("cannot compare TCB versions of different layouts", what="TCB version")
        mine, floor = self.parts(), minimum.parts()
        return [f"{k} {mine[k]} < {floor[k]}" for k in floor if mine[k] < floor[k]]

    def describe(self) -> str:
        text = " ".join(f"{k}={v}" for k, v in self.parts().items())
        return f"{self.raw.to_bytes(8, 'little').hex()} ({text})"

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw.to_bytes(8, "little").hex(), "layout": self.layout, **self.parts()}

    @property
    def layout(self) -> str:
        return "turin" if self.turin else "milan"


@dataclass(frozen=True, slots=True)
class AttestationReport:
    """Every field of an ATTESTATION_REPORT. ``verified`` says whether the signature was checked.

    TCB fields are decoded with ``turin_tcb`` (the layout chosen by the caller or by the report's
    CPUID family in v3+ reports). Fields a version lacks are None.
    """

    raw: bytes = field(repr=False)
    verified: bool
    turin_tcb: bool
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    key_info: int
    reserved_0x4c: bytes
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    reserved_0x188: bytes  # v3+: 0x18B-0x19F (21 B); v2: 0x188-0x19F (24 B)
    chip_id: bytes
    committed_tcb: TcbVersion
    current_build: int
    current_minor: int
    current_major: int
    reserved_0x1eb: int
    committed_build: int
    committed_minor: int
    committed_major: int
    reserved_0x1ef: int
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    reserved_0x1f8: bytes  # v5: 0x208-0x29F; v2/v3: 0x1F8-0x29F
    signature_r: bytes
    signature_s: bytes
    signature_reserved: bytes

    # Bits of the u32 at 0x48
    @property
    def author_key_en(self) -> bool:
        return bool(self.key_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.key_info >> 1 & 1)

    @property
    def signing_key(self) -> int:
        return self.key_info >> 2 & 0x7

    @property
    def signing_key_name(self) -> str:
        return SIGNING_KEYS.get(self.signing_key, f"reserved ({self.signing_key})")

    @property
    def product(self) -> str | None:
        """The product line named by CPUID_FAM_ID/CPUID_MOD_ID (v3+), else None."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def current_fw(self) -> str:
        return f"{self.current_major}.{self.current_minor} build {self.current_build}"

    @property
    def committed_fw(self) -> str:
        return f"{self.committed_major}.{self.committed_minor} build {self.committed_build}"

    def platform_info_names(self) -> list[str]:
        names = [name for bit, name in PLATFORM_INFO_BITS if self.platform_info >> bit & 1]
        known = sum(1 << bit for bit, _ in PLATFORM_INFO_BITS)
        rest = self.platform_info & ~known
        names += [f"reserved bit {b}" for b in range(64) if rest >> b & 1]
        return names

    def policy_description(self) -> list[tuple[str, str]]:
        from sevbox.sev.policy import SnpPolicy

        try:
            return SnpPolicy.decode(self.policy).explain()
        except FormatError as err:
            return [("invalid", err.message)]

    def fields(self) -> list[tuple[str, Any]]:
        """(name, value) for every field in report order, reserved ones included (for display)."""
        out: list[tuple[str, Any]] = [
            ("version", self.version),
            ("guest_svn", self.guest_svn),
            ("policy", self.policy),
            ("family_id", self.family_id),
            ("image_id", self.image_id),
            ("vmpl", self.vmpl),
            ("signature_algo", self.signature_algo),
            ("current_tcb", self.current_tcb),
            ("platform_info", self.platform_info),
            ("author_key_en", self.author_key_en),
            ("mask_chip_key", self.mask_chip_key),
            ("signing_key", self.signing_key),
            ("reserved_0x48", self.key_info >> 5),
            ("reserved_0x4c", self.reserved_0x4c),
            ("report_data", self.report_data),
            ("measurement", self.measurement),
            ("host_data", self.host_data),
            ("id_key_digest", self.id_key_digest),
            ("author_key_digest", self.author_key_digest),
            ("report_id", self.report_id),
            ("report_id_ma", self.report_id_ma),
            ("reported_tcb", self.reported_tcb),
        ]
        if self.version >= 3:
            out += [
                ("cpuid_fam_id", self.cpuid_fam_id),
                ("cpuid_mod_id", self.cpuid_mod_id),
                ("cpuid_step", self.cpuid_step),
                ("reserved_0x18b", self.reserved_0x188),
            ]
        else:
            out.append(("reserved_0x188", self.reserved_0x188))
        out += [
            ("chip_id", self.chip_id),
            ("committed_tcb", self.committed_tcb),
            ("current_build", self.current_build),
            ("current_minor", self.current_minor),
            ("current_major", self.current_major),
            ("reserved_0x1eb", self.reserved_0x1eb),
            ("committed_build", self.committed_build),
            ("committed_minor", self.committed_minor),
            ("committed_major", self.committed_major),
            ("reserved_0x1ef", self.reserved_0x1ef),
            ("launch_tcb", self.launch_tcb),
        ]
        if self.version >= 5:
            out += [
                ("launch_mit_vector", self.launch_mit_vector),
                ("current_mit_vector", self.current_mit_vector),
                ("reserved_0x208", self.reserved_0x1f8),
            ]
        else:
            out.append(("reserved_0x1f8", self.reserved_0x1f8))
        out += [
            ("signature_r", self.signature_r),
            ("signature_s", self.signature_s),
            ("reserved_0x330", self.signature_reserved),
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"verified": self.verified, "tcb_layout": self.current_tcb.layout}
        for name, value in self.fields():
            if isinstance(value, bytes):
                data[name] = value.hex()
            elif isinstance(value, TcbVersion):
                data[name] = value.to_json()
            else:
                data[name] = value
        data["policy"] = f"{self.policy:#x}"
        data["platform_info"] = f"{self.platform_info:#x}"
        data["platform_info_flags"] = self.platform_info_names()
        data["signing_key_name"] = self.signing_key_name
        data["product"] = self.product
        for name in ("launch_mit_vector", "current_mit_vector"):
            if data.get(name) is not None:
                data[name] = f"{data[name]:#x}"
        return data


def _decode(data: bytes, *, verified: bool, turin: bool | None) -> AttestationReport:
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0)
    vmpl, sig_algo = struct.unpack_from("<II", data, 0x30)
    platform_info, key_info = struct.unpack_from("<QI", data, 0x40)
    v3 = version >= 3
    fam, mod, step = (data[0x188], data[0x189], data[0x18A]) if v3 else (None, None, None)
    if turin is None:
        turin = fam == 0x1A
    v5 = version >= 5

    def tcb(offset: int) -> TcbVersion:
        return TcbVersion(_u64(data, offset), turin)

    sig = data[SIGNED_SIZE:]
    return AttestationReport(
        raw=bytes(data),
        verified=verified,
        turin_tcb=turin,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=tcb(0x38),
        platform_info=platform_info,
        key_info=key_info,
        reserved_0x4c=data[0x4C:0x50],
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=tcb(0x180),
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        reserved_0x188=data[0x18B:0x1A0] if v3 else data[0x188:0x1A0],
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=tcb(0x1E0),
        current_build=data[0x1E8],
        current_minor=data[0x1E9],
        current_major=data[0x1EA],
        reserved_0x1eb=data[0x1EB],
        committed_build=data[0x1EC],
        committed_minor=data[0x1ED],
        committed_major=data[0x1EE],
        reserved_0x1ef=data[0x1EF],
        launch_tcb=tcb(0x1F0),
        launch_mit_vector=_u64(data, 0x1F8) if v5 else None,
        current_mit_vector=_u64(data, 0x200) if v5 else None,
        reserved_0x1f8=data[0x208:SIGNED_SIZE] if v5 else data[0x1F8:SIGNED_SIZE],
        signature_r=sig[:_SIG_COMPONENT],
        signature_s=sig[_SIG_COMPONENT : 2 * _SIG_COMPONENT],
        signature_reserved=sig[2 * _SIG_COMPONENT :],
    )


@dataclass(frozen=True, slots=True)
class UnverifiedReport:
    """Stage one: bytes of the right length and a supported version, nothing else trusted yet."""

    data: bytes = field(repr=False)
    version: int

    @property
    def signed_bytes(self) -> bytes:
        return self.data[:SIGNED_SIZE]

    def signature_der(self) -> bytes:
        """The signature as DER (r, s), after checking the parts the signature does not cover.

        R and S must fit in 48 bytes (the upper 24 bytes of each 72-byte field are zero) and the
        368 reserved bytes after them must be zero: otherwise bytes outside the signed range could
        change unnoticed. Raises VerificationError(check="report signature").
        """
        sig = self.data[SIGNED_SIZE:]
        r_field, s_field = sig[:_SIG_COMPONENT], sig[_SIG_COMPONENT : 2 * _SIG_COMPONENT]
        for name, part in (("R", r_field), ("S", s_field)):
            if any(part[_P384_BYTES:]):
                raise VerificationError(
                    f"signature {name} has non-zero bytes above the 48 a P-384 value uses",
                    check="report signature",
                )
        if any(sig[2 * _SIG_COMPONENT :]):
            raise VerificationError(
                "the reserved bytes after the signature (0x330-0x49F) are not zero",
                check="report signature",
            )
        r = int.from_bytes(r_field, "little")
        s = int.from_bytes(s_field, "little")
        if r == 0 or s == 0:
            raise VerificationError("signature R or S is zero (no signature)", check="report signature")
        return encode_dss_signature(r, s)

    def verify(
        self, public_key: ec.EllipticCurvePublicKey, *, turin: bool | None = None
    ) -> AttestationReport:
        """Stage two: check the ECDSA P-384/SHA-384 signature, then decode every field.

        ``turin`` picks the TCB layout; None means "from the report's CPUID family" (v3+; a v2 report
        is Milan or Genoa). Raises VerificationError(check="report signature") on any mismatch.
        """
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
            raise VerificationError("the signing key is not an ECDSA P-384 key", check="report signature")
        der = self.signature_der()
        try:
            public_key.verify(der, self.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise VerificationError(
                "the ECDSA P-384 signature over bytes 0x000-0x29F does not verify with this key",
                check="report signature",
            ) from None
        return _decode(self.data, verified=True, turin=turin)

    def decode_unverified(self, *, turin: bool | None = None) -> AttestationReport:
        """Decode every field WITHOUT checking the signature: for display only (``verified=False``)."""
        return _decode(self.data, verified=False, turin=turin)


def parse_report_unverified(data: bytes) -> UnverifiedReport:
    """Stage one of reading a report: check only its length (0x4A0) and version (2, 3 or 5)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(f"{WHAT} must be bytes", what=WHAT)
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise FormatError(
            f"{WHAT} is {len(data)} bytes; an attestation report is {REPORT_SIZE} (0x4A0) bytes", what=WHAT
        )
    version = int.from_bytes(data[:4], "little")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{WHAT} version {version} is not supported (supported: 2, 3, 5)", what=WHAT)
    return UnverifiedReport(data, version)


def read_report_bytes(content: bytes) -> bytes:
    """The report's bytes from a file's content: raw (0x4A0 bytes) or hex text (whitespace allowed)."""
    if len(content) == REPORT_SIZE:
        return content
    text = content.strip()
    try:
        ascii_text = text.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(
            f"{WHAT} is {len(content)} bytes: neither {REPORT_SIZE} raw bytes nor hex text", what=WHAT
        ) from None
    compact = "".join(ascii_text.split())
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    try:
        raw = bytes.fromhex(compact)
    except ValueError:
        raise FormatError(
            f"{WHAT} is {len(content)} bytes: neither {REPORT_SIZE} raw bytes nor hex text", what=WHAT
        ) from None
    if len(raw) != REPORT_SIZE:
        raise FormatError(
            f"{WHAT} (hex) holds {len(raw)} bytes; an attestation report is {REPORT_SIZE} bytes", what=WHAT
        )
    return raw
