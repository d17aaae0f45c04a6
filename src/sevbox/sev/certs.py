"""Legacy SEV certificates and the platform chain: PDH <- PEK <- (OCA, CEK <- ASK <- ARK).

Two formats (AMD SEV API #55766):

SEV certificate, 0x824 bytes (Appendix C.1), little-endian::

    0x000 u32 VERSION (1)      0x004 u8 API_MAJOR   0x005 u8 API_MINOR   0x006 u16 reserved
    0x008 u32 PUBKEY_USAGE     0x00C u32 PUBKEY_ALGO
    0x010 PUBKEY (0x404)       ECDSA/ECDH: u32 CURVE (2 = P-384), QX[72], QY[72], zero padding
                               RSA: u32 MODULUS_SIZE (bits), PUBEXP[512], MODULUS[512]
    0x414 u32 SIG1_USAGE  0x418 u32 SIG1_ALGO  0x41C SIG1 (0x200)
    0x61C u32 SIG2_USAGE  0x620 u32 SIG2_ALGO  0x624 SIG2 (0x200)
    signed bytes: 0x000..0x413. ECDSA signature: R[72] S[72] (little-endian), zero padding.
    RSA signature: little-endian, the signer's modulus length, zero padding. An empty slot is
    usage 0x1000 (invalid), algo 0, all zero.

AMD CA certificate, ARK and ASK (Appendix B.1)::

    0x00 u32 VERSION (1)   0x04 KEY_ID[16]   0x14 CERTIFYING_ID[16]   0x24 u32 KEY_USAGE
    0x28 reserved[16]      0x38 u32 PUBEXP_SIZE (bits)   0x3C u32 MODULUS_SIZE (bits)
    0x40 PUBEXP[PUBEXP_SIZE/8]  MODULUS[MODULUS_SIZE/8]  SIGNATURE[MODULUS_SIZE/8]
    signed bytes: everything before SIGNATURE; RSA-PSS (MGF1, salt = hash length), SHA-256 for
    RSA-2048 (Naples) and SHA-384 for RSA-4096; numbers little-endian.

Parsing is structural only (:func:`parse_sev_cert`, :func:`parse_ca_cert`: lengths and layout).
Nothing is trusted until :func:`verify_chain` has checked every link. Every byte of a chain is
either signed or must be zero, so any flipped byte fails a link, and the link is named.

``sevctl export`` writes PDH|PEK|OCA|CEK, then ASK|ARK with ``--full`` (:func:`parse_export`).
The built-in ARK/ASK of each product are package data (``sevbox/data/sev-ca``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sevbox.errors import FormatError, UsageError, VerificationError

__all__ = [
    "CA_CERT_SIZES",
    "PRODUCTS",
    "SEV_CERT_SIZE",
    "Algo",
    "CaCertificate",
    "ChainReport",
    "Export",
    "Link",
    "SevCertificate",
    "SevSignature",
    "Usage",
    "builtin_ca",
    "encode_sev_cert",
    "parse_ca_cert",
    "parse_ca_chain",
    "parse_export",
    "parse_sev_cert",
    "sign_sev_cert",
    "verified_pdh",
    "verify_chain",
]

SEV_CERT_SIZE = 0x824
_SIGNED_END = 0x414
_SIG_SLOTS = (0x414, 0x61C)
_SIG_SIZE = 0x200
_PUBKEY_SIZE = 0x404
_ECC_COORD = 72
_CA_HEADER = 0x40
CA_CERT_SIZES = (0x40 + 3 * 256, 0x40 + 3 * 512)  # RSA-2048 (832 B), RSA-4096 (1600 B)
PRODUCTS = ("naples", "rome", "milan", "genoa", "turin")

_WHAT_SEV = "SEV certificate"
_WHAT_CA = "AMD CA certificate"


class Usage(enum.IntEnum):
    """Key usage (SEV API Table "Key Usages")."""

    ARK = 0x0000
    ASK = 0x0013
    INVALID = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004


class Algo(enum.IntEnum):
    """Public key and signature algorithms (SEV API Table "Algorithms")."""

    NONE = 0x000
    RSA_SHA256 = 0x001
    ECDSA_SHA256 = 0x002
    ECDH_SHA256 = 0x003
    RSA_SHA384 = 0x101
    ECDSA_SHA384 = 0x102
    ECDH_SHA384 = 0x103


_RSA_ALGOS = {Algo.RSA_SHA256, Algo.RSA_SHA384}
_ECDSA_ALGOS = {Algo.ECDSA_SHA256, Algo.ECDSA_SHA384}
_ECDH_ALGOS = {Algo.ECDH_SHA256, Algo.ECDH_SHA384}
_SHA384_ALGOS = {Algo.RSA_SHA384, Algo.ECDSA_SHA384, Algo.ECDH_SHA384}
_P384 = 2


def _usage_name(value: int) -> str:
    try:
        return Usage(value).name
    except ValueError:
        return f"{value:#x}"


def _algo_name(value: int) -> str:
    try:
        return Algo(value).name
    except ValueError:
        return f"{value:#x}"


def _hash_for(algo: int) -> hashes.HashAlgorithm:
    return hashes.SHA384() if algo in _SHA384_ALGOS else hashes.SHA256()


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


class _Bad(Exception):
    """A check failed inside a link (internal; becomes a failed :class:`Link`)."""


# --- SEV certificate -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SevSignature:
    usage: int
    algo: int
    sig: bytes  # 0x200 bytes as stored

    @property
    def is_empty(self) -> bool:
        return self.algo == Algo.NONE


@dataclass(frozen=True, slots=True)
class SevCertificate:
    """One 0x824-byte SEV certificate, parsed for layout only (not verified)."""

    raw: bytes
    version: int
    api_major: int
    api_minor: int
    usage: int
    algo: int
    sigs: tuple[SevSignature, SevSignature]

    @property
    def body(self) -> bytes:
        """The signed bytes (0x000..0x413)."""
        return self.raw[:_SIGNED_END]

    @property
    def pubkey_raw(self) -> bytes:
        return self.raw[0x10:_SIGNED_END]

    @property
    def usage_name(self) -> str:
        return _usage_name(self.usage)

    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The certified key. Raises :class:`FormatError` when the key field is malformed."""
        pk = self.pubkey_raw
        if self.algo in _ECDSA_ALGOS | _ECDH_ALGOS:
            curve = _le(pk[0:4])
            if curve != _P384:
                raise FormatError(f"{self.usage_name} key: unsupported curve id {curve}", what=_WHAT_SEV)
            x = _le(pk[4 : 4 + _ECC_COORD])
            y = _le(pk[4 + _ECC_COORD : 4 + 2 * _ECC_COORD])
            try:
                return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
            except ValueError:
                raise FormatError(f"{self.usage_name} key: not a point on P-384", what=_WHAT_SEV) from None
        if self.algo in _RSA_ALGOS:
            bits = _le(pk[0:4])
            if bits not in (2048, 4096):
                raise FormatError(f"{self.usage_name} key: unsupported RSA size {bits}", what=_WHAT_SEV)
            e, n = _le(pk[4:516]), _le(pk[516:1028])
            return _rsa_key(e, n, bits, _WHAT_SEV)
        raise FormatError(
            f"{self.usage_name} key: unsupported algorithm {_algo_name(self.algo)}", what=_WHAT_SEV
        )

    def describe(self) -> dict[str, object]:
        return {
            "usage": self.usage_name,
            "algo": _algo_name(self.algo),
            "api": f"{self.api_major}.{self.api_minor}",
            "signatures": [
                {"usage": _usage_name(s.usage), "algo": _algo_name(s.algo)}
                for s in self.sigs
                if not s.is_empty
            ],
        }


def parse_sev_cert(data: bytes) -> SevCertificate:
    """Parse one SEV certificate (exactly 0x824 bytes): layout only, nothing verified."""
    if len(data) != SEV_CERT_SIZE:
        raise FormatError(f"SEV certificate must be {SEV_CERT_SIZE} bytes, got {len(data)}", what=_WHAT_SEV)
    raw = bytes(data)
    version, major, minor, _res, usage, algo = struct.unpack_from("<IBBHII", raw, 0)
    if version != 1:
        raise FormatError(f"SEV certificate version {version} is not supported (only 1)", what=_WHAT_SEV)
    sigs = tuple(
        SevSignature(
            usage=_le(raw[off : off + 4]),
            algo=_le(raw[off + 4 : off + 8]),
            sig=raw[off + 8 : off + 8 + _SIG_SIZE],
        )
        for off in _SIG_SLOTS
    )
    return SevCertificate(
        raw=raw, version=version, api_major=major, api_minor=minor, usage=usage, algo=algo,
        sigs=(sigs[0], sigs[1]),
    )  # fmt: skip


def _rsa_key(e: int, n: int, bits: int, what: str) -> rsa.RSAPublicKey:
    if n.bit_length() != bits or e < 3 or e % 2 == 0 or e >= n:
        raise FormatError(f"malformed RSA-{bits} public key", what=what)
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise FormatError(f"malformed RSA-{bits} public key", what=what) from None


def encode_sev_cert(
    usage: Usage, algo: Algo, public_key: ec.EllipticCurvePublicKey, *, api: tuple[int, int] = (0, 0)
) -> bytes:
    """An unsigned SEV certificate for a P-384 key (both signature slots empty), e.g. an OCA or GODH."""
    if not isinstance(public_key.curve, ec.SECP384R1):
        raise FormatError("SEV certificate keys must be on P-384", what=_WHAT_SEV)
    nums = public_key.public_numbers()
    head = struct.pack("<IBBHII", 1, api[0], api[1], 0, usage, algo)
    key = (
        struct.pack("<I", _P384)
        + nums.x.to_bytes(_ECC_COORD, "little")
        + nums.y.to_bytes(_ECC_COORD, "little")
    )
    empty = struct.pack("<II", Usage.INVALID, Algo.NONE) + bytes(_SIG_SIZE)
    return head + key.ljust(_PUBKEY_SIZE, b"\x00") + empty + empty


def sign_sev_cert(cert: bytes, signer_usage: Usage, signer: ec.EllipticCurvePrivateKey) -> bytes:
    """Add an ECDSA-SHA256 signature by ``signer`` into the first empty slot of ``cert``."""
    parsed = parse_sev_cert(cert)
    free = [off for sig, off in zip(parsed.sigs, _SIG_SLOTS, strict=True) if sig.is_empty]
    if not free:
        raise FormatError("both signature slots are in use", what=_WHAT_SEV)
    off = free[0]
    r, s = decode_dss_signature(signer.sign(parsed.body, ec.ECDSA(hashes.SHA256())))
    sig = (r.to_bytes(_ECC_COORD, "little") + s.to_bytes(_ECC_COORD, "little")).ljust(_SIG_SIZE, b"\x00")
    entry = struct.pack("<II", signer_usage, Algo.ECDSA_SHA256) + sig
    return cert[:off] + entry + cert[off + len(entry) :]


# --- AMD CA certificate ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaCertificate:
    """An AMD ARK or ASK certificate (AMD's own format), parsed for layout only."""

    raw: bytes
    version: int
    key_id: bytes
    certifying_id: bytes
    usage: int
    pubexp_bits: int
    modulus_bits: int

    @property
    def _mod_len(self) -> int:
        return self.modulus_bits // 8

    @property
    def body(self) -> bytes:
        return self.raw[: _CA_HEADER + self.pubexp_bits // 8 + self._mod_len]

    @property
    def signature(self) -> bytes:
        return self.raw[len(self.body) :]

    @property
    def usage_name(self) -> str:
        return _usage_name(self.usage)

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.modulus_bits == 2048 else hashes.SHA384()

    def public_key(self) -> rsa.RSAPublicKey:
        e_len = self.pubexp_bits // 8
        e = _le(self.raw[_CA_HEADER : _CA_HEADER + e_len])
        n = _le(self.raw[_CA_HEADER + e_len : _CA_HEADER + e_len + self._mod_len])
        return _rsa_key(e, n, self.modulus_bits, _WHAT_CA)

    def describe(self) -> dict[str, object]:
        return {
            "usage": self.usage_name,
            "key_id": self.key_id.hex(),
            "certifying_id": self.certifying_id.hex(),
            "rsa_bits": self.modulus_bits,
        }


def _ca_length(data: bytes, offset: int) -> int:
    if len(data) - offset < _CA_HEADER:
        raise FormatError(
            f"AMD CA certificate truncated: {len(data) - offset} bytes, header needs {_CA_HEADER}",
            what=_WHAT_CA,
        )
    pubexp_bits, modulus_bits = (
        _le(data[offset + 0x38 : offset + 0x3C]),
        _le(data[offset + 0x3C : offset + 0x40]),
    )
    if modulus_bits not in (2048, 4096) or pubexp_bits not in (2048, 4096):
        raise FormatError(
            f"AMD CA certificate: unsupported key sizes (pubexp {pubexp_bits}, modulus {modulus_bits} bits)",
            what=_WHAT_CA,
        )
    # The signature is made by the certifying key; ARK and ASK always have the same size.
    return _CA_HEADER + pubexp_bits // 8 + 2 * (modulus_bits // 8)


def parse_ca_cert(data: bytes) -> CaCertificate:
    """Parse one AMD CA certificate (ARK or ASK), exactly its declared length."""
    length = _ca_length(data, 0)
    if len(data) != length:
        raise FormatError(f"AMD CA certificate must be {length} bytes, got {len(data)}", what=_WHAT_CA)
    raw = bytes(data)
    version, usage = _le(raw[0:4]), _le(raw[0x24:0x28])
    if version != 1:
        raise FormatError(f"AMD CA certificate version {version} is not supported (only 1)", what=_WHAT_CA)
    pubexp_bits, modulus_bits = struct.unpack_from("<II", raw, 0x38)
    return CaCertificate(
        raw=raw, version=version, key_id=raw[4:20], certifying_id=raw[20:36], usage=usage,
        pubexp_bits=pubexp_bits, modulus_bits=modulus_bits,
    )  # fmt: skip


def parse_ca_chain(data: bytes) -> tuple[bytes, bytes]:
    """Split an ASK|ARK file (``sevctl verify --ca``, the tail of ``export --full``) into raw ASK, ARK."""
    ask_len = _ca_length(data, 0)
    if len(data) < ask_len:
        raise FormatError(
            f"CA chain truncated: {len(data)} bytes, the ASK alone needs {ask_len}", what=_WHAT_CA
        )
    ark_len = _ca_length(data, ask_len)
    if len(data) != ask_len + ark_len:
        raise FormatError(
            f"CA chain must be ASK|ARK = {ask_len + ark_len} bytes, got {len(data)}", what=_WHAT_CA
        )
    return data[:ask_len], data[ask_len:]


@dataclass(frozen=True, slots=True)
class Export:
    """``sevctl export`` output, split into raw certificates (nothing parsed beyond the split)."""

    pdh: bytes
    pek: bytes
    oca: bytes
    cek: bytes
    ask: bytes | None = None
    ark: bytes | None = None


def parse_export(data: bytes) -> Export:
    """Split PDH|PEK|OCA|CEK[|ASK|ARK] (the output of ``sevctl export [--full]``)."""
    n = SEV_CERT_SIZE
    if len(data) < 4 * n:
        raise FormatError(
            f"sevctl export must hold PDH|PEK|OCA|CEK ({4 * n} bytes), got {len(data)}", what="SEV chain"
        )
    parts = [bytes(data[i * n : (i + 1) * n]) for i in range(4)]
    rest = bytes(data[4 * n :])
    if not rest:
        return Export(parts[0], parts[1], parts[2], parts[3])
    # ASK and ARK have the same size; split the tail in half so one bad size field cannot hide the ARK.
    if len(rest) not in (2 * s for s in CA_CERT_SIZES):
        raise FormatError(
            f"after PDH|PEK|OCA|CEK expected ASK|ARK ({' or '.join(str(2 * s) for s in CA_CERT_SIZES)} "
            f"bytes), got {len(rest)}",
            what="SEV chain",
        )
    half = len(rest) // 2
    return Export(parts[0], parts[1], parts[2], parts[3], ask=rest[:half], ark=rest[half:])


@cache
def builtin_ca(product: str) -> tuple[bytes, bytes]:
    """The built-in (ASK, ARK) of a product, raw bytes (package data, checked by the tests)."""
    if product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r} (known: {', '.join(PRODUCTS)})")
    base = resources.files("sevbox").joinpath("data", "sev-ca", product)
    return base.joinpath("ask.cert").read_bytes(), base.joinpath("ark.cert").read_bytes()


# --- signature checks ------------------------------------------------------------------------------


def _check_zero(data: bytes, what: str) -> None:
    if any(data):
        raise _Bad(f"{what} must be zero")


_SLOT_USAGES: dict[int, set[int]] = {
    Usage.PDH: {Usage.PEK},
    Usage.PEK: {Usage.OCA, Usage.CEK},
    Usage.OCA: {Usage.OCA},
    Usage.CEK: {Usage.ASK},
}


def _check_slots(target: SevCertificate) -> None:
    """Each slot holds a signature by one of the expected signers (once each) or is exactly empty."""
    expected = _SLOT_USAGES.get(target.usage, set())
    seen: set[int] = set()
    for i, s in enumerate(target.sigs, 1):
        if s.usage in expected and not s.is_empty and s.usage not in seen:
            seen.add(s.usage)
            continue
        if s.usage != Usage.INVALID or s.algo != Algo.NONE:
            raise _Bad(
                f"{target.usage_name} signature slot {i} ({_usage_name(s.usage)}/{_algo_name(s.algo)}) "
                "is neither an expected signature nor empty"
            )
        _check_zero(s.sig, f"{target.usage_name} empty signature slot {i}")


def _find_slot(target: SevCertificate, usage: int) -> int:
    for i, s in enumerate(target.sigs):
        if s.usage == usage and not s.is_empty:
            return i
    raise _Bad(f"{target.usage_name} carries no signature by {_usage_name(usage)}")


def _verify_rsa_pss(key: rsa.RSAPublicKey, sig_le: bytes, msg: bytes, h: hashes.HashAlgorithm) -> None:
    mod_len = key.key_size // 8
    value = _le(sig_le[:mod_len])
    _check_zero(sig_le[mod_len:], "RSA signature padding")
    if value >= key.public_numbers().n:
        raise _Bad("RSA signature out of range")
    try:
        key.verify(
            value.to_bytes(mod_len, "big"),
            msg,
            padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
            h,
        )
    except InvalidSignature:
        raise _Bad("RSA-PSS signature does not verify") from None


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, sig: bytes, msg: bytes, h: hashes.HashAlgorithm) -> None:
    r = _le(sig[0:_ECC_COORD])
    s = _le(sig[_ECC_COORD : 2 * _ECC_COORD])
    _check_zero(sig[2 * _ECC_COORD :], "ECDSA signature padding")
    if r.bit_length() > 384 or s.bit_length() > 384:
        raise _Bad("ECDSA signature out of range")
    try:
        key.verify(encode_dss_signature(r, s), msg, ec.ECDSA(h))
    except InvalidSignature:
        raise _Bad("ECDSA signature does not verify") from None


def _sev_signs_sev(signer: SevCertificate, target: SevCertificate) -> int:
    """Check that ``signer`` signed ``target``; returns the slot index used."""
    if signer.algo not in _ECDSA_ALGOS:
        raise _Bad(f"{signer.usage_name} key ({_algo_name(signer.algo)}) is not a signing key")
    slot = _find_slot(target, signer.usage)
    sig = target.sigs[slot]
    if sig.algo != signer.algo:
        raise _Bad(
            f"signature algorithm {_algo_name(sig.algo)} does not match the {signer.usage_name} key "
            f"({_algo_name(signer.algo)})"
        )
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    _verify_ecdsa(key, sig.sig, target.body, _hash_for(sig.algo))
    return slot


def _ca_signs_sev(ask: CaCertificate, target: SevCertificate) -> int:
    slot = _find_slot(target, Usage.ASK)
    sig = target.sigs[slot]
    if sig.algo not in _RSA_ALGOS:
        raise _Bad(f"CEK signature algorithm {_algo_name(sig.algo)} is not RSA")
    _verify_rsa_pss(ask.public_key(), sig.sig, target.body, _hash_for(sig.algo))
    return slot


def _ca_signs_ca(signer: CaCertificate, target: CaCertificate) -> None:
    if target.certifying_id != signer.key_id:
        raise _Bad(
            f"{target.usage_name} names certifying key {target.certifying_id.hex()}, "
            f"the {signer.usage_name} is {signer.key_id.hex()}"
        )
    _check_zero(target.raw[0x28:0x38], f"{target.usage_name} reserved field")
    key = signer.public_key()
    if len(target.signature) != key.key_size // 8:
        raise _Bad(f"{target.usage_name} signature length does not match the {signer.usage_name} key")
    _verify_rsa_pss(key, target.signature, target.body, signer.hash_algorithm)


# --- the chain -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    name: str  # e.g. "PEK -> PDH", "OCA self-signed"
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChainReport:
    links: tuple[Link, ...]
    product: str | None
    ca_source: str  # "built-in", "export", "--ca"

    @property
    def ok(self) -> bool:
        return bool(self.links) and all(link.ok for link in self.links)

    @property
    def failed(self) -> list[Link]:
        return [link for link in self.links if not link.ok]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "product": self.product,
            "ca": self.ca_source,
            "links": [{"link": x.name, "ok": x.ok, "reason": x.reason} for x in self.links],
        }


class _Links:
    def __init__(self) -> None:
        self.links: list[Link] = []

    def run(self, name: str, check: Callable[[], object]) -> bool:
        try:
            check()
        except (_Bad, FormatError) as err:
            self.links.append(Link(name, False, str(err)))
            return False
        self.links.append(Link(name, True))
        return True


def _sev(raw: bytes | SevCertificate, expect: Usage) -> SevCertificate:
    cert = raw if isinstance(raw, SevCertificate) else parse_sev_cert(raw)
    if cert.usage != expect:
        raise _Bad(f"expected a {expect.name} certificate, found usage {cert.usage_name}")
    return cert


def _ca(raw: bytes | CaCertificate, expect: Usage) -> CaCertificate:
    cert = raw if isinstance(raw, CaCertificate) else parse_ca_cert(raw)
    if cert.usage != expect:
        raise _Bad(f"expected the {expect.name}, found usage {cert.usage_name}")
    return cert


def _detect_product(cek_raw: bytes | SevCertificate) -> str | None:
    try:
        cek = _sev(cek_raw, Usage.CEK)
    except (_Bad, FormatError):
        return None
    for product in PRODUCTS:
        ask_raw, _ = builtin_ca(product)
        try:
            _ca_signs_sev(parse_ca_cert(ask_raw), cek)
        except (_Bad, FormatError):
            continue
        return product
    return None


def verify_chain(
    pdh: bytes | SevCertificate | None,
    pek: bytes | SevCertificate | None,
    oca: bytes | SevCertificate | None,
    cek: bytes | SevCertificate | None,
    *,
    ask: bytes | CaCertificate | None = None,
    ark: bytes | CaCertificate | None = None,
    product: str | None = None,
    ca_from_user: bool = False,
) -> ChainReport:
    """Check every link of the platform chain and report each one (nothing raised for a bad link).

    Links, in order: PEK -> PDH, OCA self-signed, OCA -> PEK, CEK -> PEK, ASK -> CEK, ARK -> ASK,
    ARK self-signed, and, when the ARK came with the input rather than from the caller's own
    trusted file (``ca_from_user``), "ARK is AMD's" (byte-equal to the built-in ARK of the product).
    Missing certificates (``None``) leave their links out: a lone CEK checks ASK -> CEK and up.
    The product is ``product`` or, if ``None``, the one whose built-in ASK signs the CEK.
    """
    if product is not None and product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r} (known: {', '.join(PRODUCTS)})")
    out = _Links()

    def sev_link(signer_raw: object, signer_usage: Usage, target_raw: object, target_usage: Usage) -> None:
        signer = _sev(signer_raw, signer_usage)  # type: ignore[arg-type]
        target = _sev(target_raw, target_usage)  # type: ignore[arg-type]
        _sev_signs_sev(signer, target)
        _check_slots(target)

    if pdh is not None and pek is not None:
        out.run("PEK -> PDH", lambda: sev_link(pek, Usage.PEK, pdh, Usage.PDH))
    if oca is not None:
        out.run("OCA self-signed", lambda: sev_link(oca, Usage.OCA, oca, Usage.OCA))
    if pek is not None and oca is not None:
        out.run("OCA -> PEK", lambda: sev_link(oca, Usage.OCA, pek, Usage.PEK))
    if pek is not None and cek is not None:
        out.run("CEK -> PEK", lambda: sev_link(cek, Usage.CEK, pek, Usage.PEK))

    ca_source = "export" if ask is not None else "built-in"
    if ca_from_user:
        ca_source = "--ca"
    if cek is not None and product is None:
        product = _detect_product(cek)
    builtin = builtin_ca(product) if product is not None else None
    use_ask = ask if ask is not None else (builtin[0] if builtin else None)
    use_ark = ark if ark is not None else (builtin[1] if builtin else None)

    if cek is not None:

        def ask_cek() -> None:
            if use_ask is None:
                raise _Bad(f"no built-in ASK ({', '.join(PRODUCTS)}) signs this CEK; name one with --product")
            target = _sev(cek, Usage.CEK)
            _ca_signs_sev(_ca(use_ask, Usage.ASK), target)
            _check_slots(target)

        out.run("ASK -> CEK", ask_cek)
    if use_ask is not None and use_ark is not None:
        out.run("ARK -> ASK", lambda: _ca_signs_ca(_ca(use_ark, Usage.ARK), _ca(use_ask, Usage.ASK)))
    if use_ark is not None:
        out.run("ARK self-signed", lambda: _ca_signs_ca(_ca(use_ark, Usage.ARK), _ca(use_ark, Usage.ARK)))
        if ark is not None and not ca_from_user:

            def ark_is_amds() -> None:
                raw = ark.raw if isinstance(ark, CaCertificate) else ark
                for name in PRODUCTS:
                    if raw == builtin_ca(name)[1]:
                        return
                raise _Bad("the ARK in the input is not one of AMD's built-in ARKs")

            out.run("ARK is AMD's", ark_is_amds)
    return ChainReport(links=tuple(out.links), product=product, ca_source=ca_source)


def verified_pdh(
    export: Export, *, product: str | None = None, ca: Sequence[bytes] | None = None
) -> SevCertificate:
    """The recipe: verify a full chain and return its PDH, or raise VerificationError naming the link."""
    ask, ark = (ca[0], ca[1]) if ca is not None else (export.ask, export.ark)
    report = verify_chain(
        export.pdh, export.pek, export.oca, export.cek, ask=ask, ark=ark, product=product,
        ca_from_user=ca is not None,
    )  # fmt: skip
    if not report.ok:
        bad = report.failed[0]
        raise VerificationError(f"certificate chain link {bad.name} FAILED: {bad.reason}", check=bad.name)
    return parse_sev_cert(export.pdh)
