"""VCEK/VLEK certificates and AMD's SNP product chains (ARK -> ASK or ASVK -> VCEK or VLEK).

Certificates are X.509 (DER or PEM). AMD's VCEKs break rules general-purpose X.509 libraries are
starting to enforce (serial number 0; hwID as a raw value with no ASN.1 tag), so this module reads
certificates with its own small, strict DER reader (the "hazmat" layer) and uses ``cryptography``
only for keys and signatures. Every malformed input raises :class:`~sevbox.errors.FormatError`.

VCEK/VLEK extensions (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification" #57230), under 1.3.6.1.4.1.3704.1::

    .1      structVersion   INTEGER
    .2      productName1    IA5String, e.g. "Milan-B0", "Genoa-B1", "Turin"
    .3.1    blSPL           INTEGER   boot loader SPL
    .3.2    teeSPL          INTEGER
    .3.3    snpSPL          INTEGER
    .3.4-7  spl_4..spl_7    INTEGER   reserved SPLs (Turin has no spl_4)
    .3.8    ucodeSPL        INTEGER   microcode SPL
    .3.9    fmcSPL          INTEGER   Turin only
    .4      hwID            64 bytes (8 on Turin): raw, or as an OCTET STRING   (VCEK only)
    .5      cspId           IA5String  (VLEK only)

SPL integers may be encoded in two bytes (a leading 0x00 when the value is 128-255).

Chains: the ARK is self-signed; it signs the ASK (VCEK chain) or the ASVK (VLEK chain), which signs
the VCEK or VLEK. Every link is RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.snp import PRODUCTS, TcbVersion

__all__ = [
    "Certificate",
    "EndorsementExtensions",
    "ProductChain",
    "builtin_chain",
    "canonical_product",
    "parse_certificate",
    "parse_certificates",
    "parse_product_chain",
    "verify_link",
]

_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = f"{_AMD}.1"
OID_PRODUCT_NAME = f"{_AMD}.2"
OID_BL_SPL = f"{_AMD}.3.1"
OID_TEE_SPL = f"{_AMD}.3.2"
OID_SNP_SPL = f"{_AMD}.3.3"
OID_SPL_4 = f"{_AMD}.3.4"
OID_SPL_5 = f"{_AMD}.3.5"
OID_SPL_6 = f"{_AMD}.3.6"
OID_SPL_7 = f"{_AMD}.3.7"
OID_UCODE_SPL = f"{_AMD}.3.8"
OID_FMC_SPL = f"{_AMD}.3.9"
OID_HWID = f"{_AMD}.4"
OID_CSP_ID = f"{_AMD}.5"

OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_COMMON_NAME = "2.5.4.3"

CHIP_ID_SIZE = 64
TURIN_HWID_SIZE = 8

# ---------------------------------------------------------------------------------------------
# A small strict DER reader


class _Der:
    """One TLV: tag byte, content slice (start, end) into ``data``."""

    __slots__ = ("data", "end", "hstart", "start", "tag", "what")

    def __init__(self, data: bytes, tag: int, hstart: int, start: int, end: int, *, what: str) -> None:
        self.data, self.tag, self.hstart, self.start, self.end = data, tag, hstart, start, end
        self.what = what

    @property
    def content(self) -> bytes:
        return self.data[self.start : self.end]

    def children(self) -> list[_Der]:
        if not self.tag & 0x20:
            raise FormatError(f"{self.what}: expected a constructed DER value", what=self.what)
        out: list[_Der] = []
        pos = self.start
        while pos < self.end:
            child, pos = _read_tlv(self.data, pos, self.end, self.what)
            out.append(child)
        return out

    def full(self) -> bytes:
        """The whole TLV (header and content)."""
        return self.data[self.hstart : self.end]


def _read_tlv(data: bytes, pos: int, limit: int, what: str) -> tuple[_Der, int]:
    if pos + 2 > limit:
        raise FormatError(f"{what}: truncated DER", what=what)
    hstart = pos
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise FormatError(f"{what}: multi-byte DER tags are not used here", what=what)
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise FormatError(f"{what}: indefinite DER length", what=what)
    else:
        count = first & 0x7F
        if count > 4 or pos + count > limit:
            raise FormatError(f"{what}: bad DER length", what=what)
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise FormatError(f"{what}: DER length not minimally encoded", what=what)
        pos += count
    end = pos + length
    if end > limit:
        raise FormatError(f"{what}: truncated DER (value runs past its container)", what=what)
    return _Der(data, tag, hstart, pos, end, what=what), end


def _expect(node: _Der, tag: int, name: str) -> _Der:
    if node.tag != tag:
        raise FormatError(
            f"{node.what}: {name}: expected DER tag {tag:#04x}, found {node.tag:#04x}", what=node.what
        )
    return node


def _der_int(node: _Der, name: str) -> int:
    _expect(node, 0x02, name)
    content = node.content
    if not content:
        raise FormatError(f"{node.what}: {name}: empty INTEGER", what=node.what)
    if len(content) > 1 and (
        (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise FormatError(f"{node.what}: {name}: INTEGER not minimally encoded", what=node.what)
    return int.from_bytes(content, "big", signed=True)


def _der_oid(node: _Der, name: str) -> str:
    _expect(node, 0x06, name)
    content = node.content
    if not content or content[-1] & 0x80:
        raise FormatError(f"{node.what}: {name}: bad OBJECT IDENTIFIER", what=node.what)
    arcs: list[int] = []
    value = 0
    for i, b in enumerate(content):
        if value == 0 and b == 0x80:
            raise FormatError(f"{node.what}: {name}: OID arc not minimal", what=node.what)
        value = value << 7 | b & 0x7F
        if not b & 0x80:
            if not arcs:
                first = min(value // 40, 2)
                arcs += [first, value - 40 * first]
            else:
                arcs.append(value)
            value = 0
        elif i == len(content) - 1:
            raise FormatError(f"{node.what}: {name}: truncated OID", what=node.what)
    return ".".join(map(str, arcs))


def _der_time(node: _Der, name: str) -> dt.datetime:
    try:
        text = node.content.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{node.what}: {name}: time is not ASCII", what=node.what) from None
    if node.tag == 0x17 and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (node.tag == 0x18 and re.fullmatch(r"\d{14}Z", text)):
        raise FormatError(f"{node.what}: {name}: bad time {text!r}", what=node.what)
    try:
        return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise FormatError(f"{node.what}: {name}: bad time {text!r}", what=node.what) from None


def _der_string(node: _Der, name: str) -> str:
    if node.tag not in (0x0C, 0x13, 0x16, 0x14, 0x1E):
        raise FormatError(f"{node.what}: {name}: not a string (tag {node.tag:#04x})", what=node.what)
    codec = "utf-16-be" if node.tag == 0x1E else "utf-8" if node.tag == 0x0C else "latin-1"
    try:
        text = node.content.decode(codec)
    except UnicodeDecodeError:
        raise FormatError(f"{node.what}: {name}: bad string", what=node.what) from None
    if node.tag == 0x16 and not text.isascii():
        raise FormatError(f"{node.what}: {name}: IA5String is not ASCII", what=node.what)
    return text


def _one(data: bytes, what: str, name: str) -> _Der:
    node, end = _read_tlv(data, 0, len(data), what)
    if end != len(data):
        raise FormatError(f"{what}: {name}: trailing bytes after the DER value", what=what)
    return node


# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True, slots=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the content of extnValue's OCTET STRING


@dataclass(frozen=True)
class Certificate:
    """An X.509 certificate, split into the parts a chain check needs. Built by parse_certificate."""

    der: bytes = field(repr=False)
    tbs: bytes = field(repr=False)
    tbs_signature_algorithm: bytes = field(repr=False)  # DER AlgorithmIdentifier inside the TBS
    signature_algorithm: bytes = field(repr=False)  # DER AlgorithmIdentifier outside
    signature: bytes = field(repr=False)
    serial_number: int
    issuer: bytes = field(repr=False)  # DER Name
    subject: bytes = field(repr=False)
    issuer_cn: str
    subject_cn: str
    not_before: dt.datetime
    not_after: dt.datetime
    spki: bytes = field(repr=False)
    extensions: tuple[Extension, ...] = field(repr=False)

    @functools.cached_property
    def public_key(self) -> Any:
        try:
            return serialization.load_der_public_key(self.spki)
        except (ValueError, UnsupportedAlgorithm) as err:
            raise FormatError(
                f"certificate {self.subject_cn!r}: unusable public key ({err})", what="certificate"
            ) from None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def extension(self, oid: str) -> Extension | None:
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None

    def to_pem(self) -> str:
        b64 = base64.b64encode(self.der).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _name_cn(name: _Der) -> str:
    cn = ""
    for rdn in name.children():
        _expect(rdn, 0x31, "RelativeDistinguishedName")
        for atv in rdn.children():
            parts = _expect(atv, 0x30, "AttributeTypeAndValue").children()
            if len(parts) != 2:
                raise FormatError(f"{name.what}: bad name attribute", what=name.what)
            if _der_oid(parts[0], "attribute type") == OID_COMMON_NAME:
                cn = _der_string(parts[1], "common name")
    return cn


def _parse_der_certificate(data: bytes, what: str) -> Certificate:
    cert = _expect(_one(data, what, "certificate"), 0x30, "Certificate")
    parts = cert.children()
    if len(parts) != 3:
        raise FormatError(f"{what}: a certificate has 3 parts, found {len(parts)}", what=what)
    tbs, sig_alg, sig_value = parts
    _expect(tbs, 0x30, "tbsCertificate")
    _expect(sig_alg, 0x30, "signatureAlgorithm")
    _expect(sig_value, 0x03, "signatureValue")
    if not sig_value.content or sig_value.content[0] != 0:
        raise FormatError(f"{what}: signature BIT STRING has unused bits", what=what)

    items = tbs.children()
    i = 0
    version = 0
    if items and items[0].tag == 0xA0:
        vchildren = items[0].children()
        if len(vchildren) != 1:
            raise FormatError(f"{what}: bad version field", what=what)
        version = _der_int(vchildren[0], "version")
        i = 1
    if version not in (0, 1, 2):
        raise FormatError(f"{what}: unknown certificate version {version}", what=what)
    if len(items) < i + 6:
        raise FormatError(f"{what}: tbsCertificate is missing fields", what=what)
    serial = _der_int(items[i], "serialNumber")
    tbs_alg = _expect(items[i + 1], 0x30, "signature")
    issuer = _expect(items[i + 2], 0x30, "issuer")
    validity = _expect(items[i + 3], 0x30, "validity").children()
    subject = _expect(items[i + 4], 0x30, "subject")
    spki = _expect(items[i + 5], 0x30, "subjectPublicKeyInfo")
    if len(validity) != 2:
        raise FormatError(f"{what}: validity has {len(validity)} parts, not 2", what=what)
    not_before = _der_time(validity[0], "notBefore")
    not_after = _der_time(validity[1], "notAfter")
    extensions: list[Extension] = []
    rest = items[i + 6 :]
    for opt in rest:
        if opt.tag in (0x81, 0x82):  # issuer/subject unique IDs
            continue
        if opt.tag != 0xA3 or version != 2:
            raise FormatError(f"{what}: unexpected field (tag {opt.tag:#04x}) in tbsCertificate", what=what)
        wrapped = opt.children()
        if len(wrapped) != 1:
            raise FormatError(f"{what}: bad extensions field", what=what)
        seen: set[str] = set()
        for ext in _expect(wrapped[0], 0x30, "extensions").children():
            fields_ = _expect(ext, 0x30, "Extension").children()
            if len(fields_) not in (2, 3):
                raise FormatError(f"{what}: an extension has {len(fields_)} parts", what=what)
            oid = _der_oid(fields_[0], "extnID")
            critical = False
            if len(fields_) == 3:
                crit = _expect(fields_[1], 0x01, "critical")
                if crit.content not in (b"\x00", b"\xff"):
                    raise FormatError(f"{what}: bad BOOLEAN", what=what)
                critical = crit.content == b"\xff"
            value = _expect(fields_[-1], 0x04, "extnValue").content
            if oid in seen:
                raise FormatError(f"{what}: duplicate extension {oid}", what=what)
            seen.add(oid)
            extensions.append(Extension(oid, critical, value))
    return Certificate(
        der=bytes(data),
        tbs=tbs.full(),
        tbs_signature_algorithm=tbs_alg.full(),
        signature_algorithm=sig_alg.full(),
        signature=sig_value.content[1:],
        serial_number=serial,
        issuer=issuer.full(),
        subject=subject.full(),
        issuer_cn=_name_cn(issuer),
        subject_cn=_name_cn(subject),
        not_before=not_before,
        not_after=not_after,
        spki=spki.full(),
        extensions=tuple(extensions),
    )


_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


def _pem_blocks(data: bytes, what: str) -> list[bytes]:
    blocks: list[bytes] = []
    for m in _PEM_RE.finditer(data):
        if m.group(1) != b"CERTIFICATE":
            raise FormatError(f"{what}: PEM block is {m.group(1).decode()!r}, not CERTIFICATE", what=what)
        body = b"".join(m.group(2).split())
        try:
            blocks.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise FormatError(f"{what}: bad base64 in PEM", what=what) from None
    return blocks


def parse_certificates(data: bytes, *, what: str = "certificate") -> list[Certificate]:
    """Every certificate in ``data``: one DER certificate, or one or more PEM blocks."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(f"{what} must be bytes", what=what)
    data = bytes(data)
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        blocks = _pem_blocks(data, what)
        if not blocks:
            raise FormatError(f"{what}: no complete PEM block", what=what)
        return [_parse_der_certificate(b, what) for b in blocks]
    if not data:
        raise FormatError(f"{what} is empty", what=what)
    return [_parse_der_certificate(data, what)]


def parse_certificate(data: bytes, *, what: str = "certificate") -> Certificate:
    """Exactly one certificate, DER or PEM."""
    certs = parse_certificates(data, what=what)
    if len(certs) != 1:
        raise FormatError(f"{what}: expected one certificate, found {len(certs)}", what=what)
    return certs[0]


# ---------------------------------------------------------------------------------------------
# Signatures


def _pss_params_ok(alg_der: bytes) -> str | None:
    """None if ``alg_der`` is RSASSA-PSS/SHA-384/MGF1-SHA-384/salt 48, else why not."""
    what = "signature algorithm"
    try:
        alg = _expect(_one(alg_der, what, "AlgorithmIdentifier"), 0x30, "AlgorithmIdentifier").children()
        if not alg:
            return "empty AlgorithmIdentifier"
        oid = _der_oid(alg[0], "algorithm")
        if oid != OID_RSASSA_PSS:
            return f"algorithm {oid} is not RSASSA-PSS"
        if len(alg) != 2:
            return "RSASSA-PSS without parameters"
        hash_oid, mgf_hash, salt, trailer = "1.3.14.3.2.26", "1.3.14.3.2.26", 20, 1
        for p in _expect(alg[1], 0x30, "RSASSA-PSS-params").children():
            inner = p.children()
            if len(inner) != 1:
                return "bad RSASSA-PSS parameter"
            if p.tag == 0xA0:
                hash_oid = _der_oid(inner[0].children()[0], "hashAlgorithm")
            elif p.tag == 0xA1:
                mgf = inner[0].children()
                if len(mgf) != 2 or _der_oid(mgf[0], "maskGenAlgorithm") != OID_MGF1:
                    return "mask generation is not MGF1"
                mgf_hash = _der_oid(mgf[1].children()[0], "MGF1 hash")
            elif p.tag == 0xA2:
                salt = _der_int(inner[0], "saltLength")
            elif p.tag == 0xA3:
                trailer = _der_int(inner[0], "trailerField")
            else:
                return "unknown RSASSA-PSS parameter"
    except (FormatError, IndexError):
        return "malformed RSASSA-PSS parameters"
    if hash_oid != OID_SHA384 or mgf_hash != OID_SHA384:
        return "hash is not SHA-384"
    if salt != 48 or trailer != 1:
        return f"salt length {salt} (expected 48) or trailer {trailer} (expected 1)"
    return None


@functools.lru_cache(maxsize=64)
def _link_cached(child_der: bytes, issuer_der: bytes) -> str | None:
    child = parse_certificate(child_der)
    issuer = parse_certificate(issuer_der)
    return _link_problem(child, issuer)


def _link_problem(child: Certificate, issuer: Certificate) -> str | None:
    if child.issuer != issuer.subject:
        if child.issuer_cn == issuer.subject_cn:
            return f"{child.subject_cn!r}'s issuer name differs from {issuer.subject_cn!r}'s subject name"
        return f"{child.subject_cn!r} names issuer {child.issuer_cn!r}, not {issuer.subject_cn!r}"
    if child.signature_algorithm != child.tbs_signature_algorithm:
        return "the signature algorithm inside the signed part differs from the one outside"
    why = _pss_params_ok(child.signature_algorithm)
    if why:
        return f"{child.subject_cn!r}: {why}"
    key = issuer.public_key
    if not isinstance(key, rsa.RSAPublicKey):
        return f"{issuer.subject_cn!r} does not hold an RSA key"
    try:
        key.verify(
            child.signature,
            child.tbs,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
            hashes.SHA384(),
        )
    except InvalidSignature:
        return f"{issuer.subject_cn!r}'s RSA-PSS signature on {child.subject_cn!r} does not verify"
    return None


def verify_link(child: Certificate, issuer: Certificate, *, check: str = "chain") -> None:
    """Check that ``issuer`` signed ``child`` (RSASSA-PSS SHA-384). Results are cached by DER.

    Raises VerificationError(check=check) naming what is wrong.
    """
    problem = _link_cached(child.der, issuer.der)
    if problem:
        raise VerificationError(problem, check=check)


# ---------------------------------------------------------------------------------------------
# Products and chains


def canonical_product(name: str) -> str:
    """``milan``/``Milan-B0``/``SEV-Milan``/``SEV-VLEK-Genoa``/``Siena`` -> ``Milan``/``Genoa``/..."""
    text = name.strip()
    for prefix in ("SEV-VLEK-", "SEV-", "ARK-"):
        if text.upper().startswith(prefix):
            text = text[len(prefix) :]
    text = text.split("-")[0].capitalize()
    if text == "Siena":
        return "Genoa"
    if text not in PRODUCTS:
        raise FormatError(
            f"unknown SEV-SNP product {name!r} (known: {', '.join(p.lower() for p in PRODUCTS)})",
            what="product",
        )
    return text


@dataclass(frozen=True)
class ProductChain:
    """An AMD product's root (ARK) and the intermediate that signs VCEKs (ASK) or VLEKs (ASVK)."""

    product: str
    ark: Certificate
    ask: Certificate | None = None
    asvk: Certificate | None = None

    def intermediate(self, vlek: bool) -> Certificate | None:
        return self.asvk if vlek else self.ask


def parse_product_chain(data: bytes, *, product: str | None = None) -> ProductChain:
    """A KDS ``cert_chain`` answer (ASK or ASVK, then ARK; PEM) or any PEM set with one ARK.

    The ARK is the self-issued certificate; the others are sorted into ASK/ASVK by their names
    (``SEV-<Product>`` / ``SEV-VLEK-<Product>``).
    """
    what = "AMD certificate chain"
    certs = parse_certificates(data, what=what)
    arks = [c for c in certs if c.issuer == c.subject]
    if len(arks) != 1:
        raise FormatError(f"{what}: expected one self-issued ARK, found {len(arks)}", what=what)
    ark = arks[0]
    ask = asvk = None
    for c in certs:
        if c is ark:
            continue
        if c.subject_cn.upper().startswith("SEV-VLEK-"):
            asvk = c
        else:
            ask = c
    if product is None:
        product = canonical_product(ark.subject_cn)
    return ProductChain(canonical_product(product), ark, ask, asvk)


@functools.cache
def builtin_chain(product: str) -> ProductChain:
    """The AMD chain shipped with sevbox for ``product`` (package data: ``sevbox/data/snp-ca``).

    Reading package data is not I/O on the user's files: these bytes are part of the program.
    """
    name = canonical_product(product)
    folder = resources.files("sevbox").joinpath("data", "snp-ca", name.lower())
    data = b"".join(folder.joinpath(f).read_bytes() for f in ("ark.pem", "ask.pem", "asvk.pem"))
    return parse_product_chain(data, product=name)


# ---------------------------------------------------------------------------------------------
# VCEK / VLEK extensions


def _spl(ext: Extension, name: str) -> int:
    """An SPL INTEGER. Two-byte encodings are tolerated even when not minimal (``02 02 00 03``)."""
    what = "VCEK extension"
    node = _expect(_one(ext.value, what, name), 0x02, name)
    content = node.content
    if not content or len(content) > 2 or content[0] & 0x80:
        raise FormatError(f"{what} {name} is not an INTEGER 0-255", what=what)
    value = int.from_bytes(content, "big")
    if not 0 <= value <= 0xFF:
        raise FormatError(f"{what} {name} = {value} is not 0-255", what=what)
    return value


@dataclass(frozen=True, slots=True)
class EndorsementExtensions:
    """The AMD extensions of a VCEK or VLEK."""

    struct_version: int
    product_name: str
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    spl_4: int | None
    spl_5: int | None
    spl_6: int | None
    spl_7: int | None
    fmc_spl: int | None
    hwid: bytes | None
    csp_id: str | None

    @property
    def kind(self) -> str:
        return "VLEK" if self.csp_id is not None else "VCEK"

    @property
    def product(self) -> str:
        return canonical_product(self.product_name)

    def tcb(self, *, turin: bool | None = None) -> TcbVersion:
        """The TCB_VERSION these SPLs stand for, in the product's layout (Turin or Milan/Genoa)."""
        if turin is None:
            turin = self.product == "Turin"
        if turin:
            reserved = bytes(x or 0 for x in (self.spl_5, self.spl_6, self.spl_7))
            fmc = self.fmc_spl or 0
        else:
            reserved = bytes(x or 0 for x in (self.spl_4, self.spl_5, self.spl_6, self.spl_7))
            fmc = None
        return TcbVersion.from_parts(
            bootloader=self.bl_spl,
            tee=self.tee_spl,
            snp=self.snp_spl,
            microcode=self.ucode_spl,
            fmc=fmc,
            turin=turin,
            reserved=reserved,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "struct_version": self.struct_version,
            "product_name": self.product_name,
            "blSPL": self.bl_spl,
            "teeSPL": self.tee_spl,
            "snpSPL": self.snp_spl,
            "ucodeSPL": self.ucode_spl,
            "fmcSPL": self.fmc_spl,
            "hwID": self.hwid.hex() if self.hwid is not None else None,
            "cspId": self.csp_id,
        }


def endorsement_extensions(cert: Certificate) -> EndorsementExtensions:
    """Read the AMD extensions of a VCEK or VLEK (FormatError if required ones are missing)."""
    what = "VCEK extension"

    def need(oid: str, name: str) -> Extension:
        ext = cert.extension(oid)
        if ext is None:
            raise FormatError(
                f"certificate {cert.subject_cn!r} lacks the {name} extension ({oid})", what=what
            )
        return ext

    def opt_spl(oid: str, name: str) -> int | None:
        ext = cert.extension(oid)
        return None if ext is None else _spl(ext, name)

    struct_version = _spl(need(OID_STRUCT_VERSION, "structVersion"), "structVersion")
    product_node = _one(need(OID_PRODUCT_NAME, "productName").value, what, "productName")
    if product_node.tag != 0x16:
        raise FormatError(f"{what} productName is not an IA5String", what=what)
    product_name = _der_string(product_node, "productName")
    hwid: bytes | None = None
    hw_ext = cert.extension(OID_HWID)
    if hw_ext is not None:
        raw = hw_ext.value
        if len(raw) in (CHIP_ID_SIZE, TURIN_HWID_SIZE):
            hwid = raw
        else:
            node = _expect(_one(raw, what, "hwID"), 0x04, "hwID")
            hwid = node.content
            if len(hwid) not in (CHIP_ID_SIZE, TURIN_HWID_SIZE):
                raise FormatError(f"{what} hwID is {len(hwid)} bytes (expected 64, or 8 on Turin)", what=what)
    csp_id: str | None = None
    csp_ext = cert.extension(OID_CSP_ID)
    if csp_ext is not None:
        csp_id = _der_string(_one(csp_ext.value, what, "cspId"), "cspId")
    if hwid is not None and csp_id is not None:
        raise FormatError(f"certificate {cert.subject_cn!r} has both hwID and cspId", what=what)
    if hwid is None and csp_id is None:
        raise FormatError(
            f"certificate {cert.subject_cn!r} has neither hwID (VCEK) nor cspId (VLEK)", what=what
        )
    return EndorsementExtensions(
        struct_version=struct_version,
        product_name=product_name,
        bl_spl=_spl(need(OID_BL_SPL, "blSPL"), "blSPL"),
        tee_spl=_spl(need(OID_TEE_SPL, "teeSPL"), "teeSPL"),
        snp_spl=_spl(need(OID_SNP_SPL, "snpSPL"), "snpSPL"),
        ucode_spl=_spl(need(OID_UCODE_SPL, "ucodeSPL"), "ucodeSPL"),
        spl_4=opt_spl(OID_SPL_4, "spl_4"),
        spl_5=opt_spl(OID_SPL_5, "spl_5"),
        spl_6=opt_spl(OID_SPL_6, "spl_6"),
        spl_7=opt_spl(OID_SPL_7, "spl_7"),
        fmc_spl=opt_spl(OID_FMC_SPL, "fmcSPL"),
        hwid=hwid,
        csp_id=csp_id,
    )


def endorsement_public_key(cert: Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise FormatError(f"certificate {cert.subject_cn!r} does not hold a P-384 key", what="VCEK")
    return key
