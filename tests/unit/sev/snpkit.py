"""Test helpers: synthetic AMD-like chains, VCEKs/VLEKs and signed SNP reports, with throw-away keys.

Real reports exist only for Milan v2 (tests/data/snp); these make v3/v5, Turin and VLEK cases. The
layouts follow the ABI spec independently of sevbox's parser (offsets written out here again).
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DATA = Path(__file__).resolve().parents[2] / "data" / "snp"
AMD = "1.3.6.1.4.1.3704.1"
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


def virtee_report() -> bytes:
    return bytes.fromhex(data("virtee_milan_report.hex").decode().strip())


def _name(cn: str) -> x509.Name:
    """AMD's name layout (OU, C, L, ST, O, CN), so a fake can carry exactly a real certificate's name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    issuer: str,
    public_key: object,
    signer: rsa.RSAPrivateKey,
    *,
    serial: int = 1,
    extensions: list[x509.ExtensionType] | None = None,
    not_before: dt.datetime | None = None,
) -> bytes:
    start = not_before or dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
    )
    for ext in extensions or []:
        b = b.add_extension(ext, critical=False)
    from cryptography.hazmat.primitives import serialization

    return b.sign(signer, hashes.SHA384(), rsa_padding=PSS).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class FakeCa:
    product: str
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    ark: bytes
    ask: bytes
    asvk: bytes

    def pem(self, *, vlek: bool = False) -> bytes:
        from cryptography.hazmat.primitives import serialization

        mid = self.asvk if vlek else self.ask
        return b"".join(
            x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
            for d in (mid, self.ark)
        )


@functools.cache
def make_ca(product: str = "Milan") -> FakeCa:
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark = _cert(f"ARK-{product}", f"ARK-{product}", ark_key.public_key(), ark_key)
    ask = _cert(f"SEV-{product}", f"ARK-{product}", ask_key.public_key(), ark_key, serial=2)
    asvk = _cert(f"SEV-VLEK-{product}", f"ARK-{product}", ask_key.public_key(), ark_key, serial=3)
    return FakeCa(product, ark_key, ask_key, ark, ask, asvk)


@functools.cache
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def der_int(value: int, *, width: int | None = None) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    if width is not None:
        body = value.to_bytes(width, "big")
    return bytes([0x02, len(body)]) + body


def ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode()


def vcek(
    ca: FakeCa,
    *,
    product_name: str = "Milan-B0",
    spl: dict[str, int] | None = None,
    hwid: bytes | None = b"\x11" * 64,
    hwid_octet_string: bool = False,
    csp_id: str | None = None,
    two_byte_ints: bool = False,
    turin: bool = False,
    key: ec.EllipticCurvePrivateKey | None = None,
    omit: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
) -> bytes:
    """A VCEK (or a VLEK with ``csp_id``) signed by the test ASK (ASVK for a VLEK)."""
    spl = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115, "fmc": 0} | (spl or {})
    exts: list[tuple[str, bytes]] = [("1", der_int(1)), ("2", ia5(product_name))]
    ints = [("3.1", spl["bl"]), ("3.2", spl["tee"]), ("3.3", spl["snp"])]
    ints += [("3.5", 0), ("3.6", 0), ("3.7", 0), ("3.8", spl["ucode"])]
    ints += [("3.9", spl["fmc"])] if turin else [("3.4", 0)]
    exts += [(o, der_int(v, width=2 if two_byte_ints else None)) for o, v in ints]
    if hwid is not None:
        exts.append(("4", bytes([0x04, len(hwid)]) + hwid if hwid_octet_string else hwid))
    if csp_id is not None:
        exts.append(("5", ia5(csp_id)))
    ext_objs: list[x509.ExtensionType] = [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{AMD}.{o}"), v) for o, v in exts if o not in omit
    ]
    k = key or signing_key()
    issuer = f"SEV-VLEK-{ca.product}" if csp_id is not None else f"SEV-{ca.product}"
    cn = "SEV-VLEK" if csp_id is not None else "SEV-VCEK"
    return _cert(cn, issuer, k.public_key(), ca.ask_key, extensions=ext_objs, not_before=not_before)


def tcb_bytes(*, bl: int, tee: int, snp: int, ucode: int, fmc: int = 0, turin: bool = False) -> bytes:
    if turin:
        return bytes([fmc, bl, tee, snp, 0, 0, 0, ucode])
    return bytes([bl, tee, 0, 0, 0, 0, snp, ucode])


def report(
    *,
    version: int = 3,
    policy: int = 0x30000,
    vmpl: int = 0,
    signing: int = 0,
    mask_chip: bool = False,
    tcb: bytes | None = None,
    chip_id: bytes = b"\x11" * 64,
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    measurement: bytes = bytes(range(48)),
    report_data: bytes = b"\x01\x02\x03" + bytes(61),
    host_data: bytes = b"\xaa" * 32,
    report_id_ma: bytes = b"\xff" * 32,
    mit: tuple[int, int] = (0x3, 0x7),
    key: ec.EllipticCurvePrivateKey | None = None,
    sig_algo: int = 1,
) -> bytes:
    """A signed ATTESTATION_REPORT; offsets from ABI #56860 Table 'ATTESTATION_REPORT Structure'."""
    tcb = tcb if tcb is not None else tcb_bytes(bl=3, tee=0, snp=8, ucode=115)
    buf = bytearray(0x4A0)
    struct.pack_into("<IIQ", buf, 0, version, 1, policy)
    buf[0x10:0x20] = b"F" * 16
    buf[0x20:0x30] = b"I" * 16
    struct.pack_into("<II", buf, 0x30, vmpl, sig_algo)
    buf[0x38:0x40] = tcb
    struct.pack_into("<QI", buf, 0x40, 0x1, signing << 2 | (2 if mask_chip else 0))
    buf[0x50:0x90] = report_data
    buf[0x90:0xC0] = measurement
    buf[0xC0:0xE0] = host_data
    buf[0x140:0x160] = b"\x42" * 32
    buf[0x160:0x180] = report_id_ma
    buf[0x180:0x188] = tcb
    if version >= 3:
        buf[0x188:0x18B] = bytes(cpuid)
    buf[0x1A0:0x1E0] = bytes(64) if mask_chip else chip_id
    buf[0x1E0:0x1E8] = tcb
    buf[0x1E8:0x1EB] = bytes([21, 55, 1])
    buf[0x1EC:0x1EF] = bytes([20, 55, 1])
    buf[0x1F0:0x1F8] = tcb
    if version >= 5:
        struct.pack_into("<QQ", buf, 0x1F8, *mit)
    k = key or signing_key()
    der = k.sign(bytes(buf[:0x2A0]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    buf[0x2A0 : 0x2A0 + 72] = r.to_bytes(72, "little")
    buf[0x2E8 : 0x2E8 + 72] = s.to_bytes(72, "little")
    return bytes(buf)
