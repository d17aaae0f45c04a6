"""The legacy SEV attestation report (ATTESTATION command, SEV API >= 0.23), 0xD0 bytes, PEK-signed.

Layout (AMD SEV API #55766, "ATTESTATION", report structure), little-endian::

    0x00 MNONCE[16]          the nonce the owner asked for
    0x10 LAUNCH_DIGEST[32]   SHA-256 of what was launched (the GCTX.LD)
    0x30 u32 POLICY          the guest policy
    0x34 u32 SIG_USAGE       must be PEK (0x1002)
    0x38 u32 SIG_ALGO        must be ECDSA_SHA256 (0x2)
    0x3C u32 reserved        must be zero
    0x40 SIG1[0x90]          ECDSA P-384: R[72] S[72], little-endian
    signed bytes: 0x00..0x33 (MNONCE, LAUNCH_DIGEST, POLICY)

Two named stages, as for every untrusted input here: :func:`parse_report_unverified` checks only the
length; :func:`verify_report` checks the signature with the platform's PEK before any field is
trusted, then the caller's expectations (nonce, digest, policy), and returns a :class:`VerifiedReport`.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.certs import Algo, SevCertificate, Usage
from sevbox.sev.policy import SevPolicy

__all__ = [
    "REPORT_SIZE",
    "SevReport",
    "VerifiedReport",
    "parse_report_unverified",
    "sign_report_body",
    "verify_report",
]

REPORT_SIZE = 0xD0
_SIGNED_END = 0x34
_COORD = 72
_WHAT = "SEV attestation report"


@dataclass(frozen=True, slots=True)
class SevReport:
    """Fields as found, not yet verified: do not decide anything on them."""

    raw: bytes
    mnonce: bytes
    launch_digest: bytes
    policy: int
    sig_usage: int
    sig_algo: int
    reserved: int
    sig_r: int
    sig_s: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:_SIGNED_END]

    def to_json(self) -> dict[str, object]:
        return {
            "mnonce": self.mnonce.hex(),
            "launch_digest": self.launch_digest.hex(),
            "policy": f"{self.policy:#x}",
            "policy_names": SevPolicy.decode(self.policy).names(),
            "sig_usage": f"{self.sig_usage:#x}",
            "sig_algo": f"{self.sig_algo:#x}",
        }


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    report: SevReport

    @property
    def policy(self) -> SevPolicy:
        return SevPolicy.decode(self.report.policy)


def parse_report_unverified(data: bytes) -> SevReport:
    """Stage 1: length and layout only."""
    if len(data) != REPORT_SIZE:
        raise FormatError(f"SEV attestation report must be {REPORT_SIZE} bytes, got {len(data)}", what=_WHAT)
    raw = bytes(data)
    policy, usage, algo, reserved = struct.unpack_from("<IIII", raw, 0x30)
    sig = raw[0x40:REPORT_SIZE]
    return SevReport(
        raw=raw,
        mnonce=raw[0:16],
        launch_digest=raw[16:48],
        policy=policy,
        sig_usage=usage,
        sig_algo=algo,
        reserved=reserved,
        sig_r=int.from_bytes(sig[:_COORD], "little"),
        sig_s=int.from_bytes(sig[_COORD:], "little"),
    )


def verify_report(
    report: SevReport,
    pek: SevCertificate,
    *,
    mnonce: bytes | None = None,
    launch_digest: bytes | None = None,
    policy: int | None = None,
) -> VerifiedReport:
    """Stage 2: the PEK's signature first, then the caller's expectations.

    ``pek`` must come from a verified chain (:func:`sevbox.sev.certs.verify_chain`). Raises
    :class:`VerificationError` with ``check`` one of "signature", "mnonce", "launch_digest", "policy".
    """
    if pek.usage != Usage.PEK or pek.algo != Algo.ECDSA_SHA256:
        raise VerificationError(
            f"the signing certificate is {pek.usage_name}/{pek.algo:#x}, not a PEK (ECDSA_SHA256)",
            check="signature",
        )
    if report.sig_usage != Usage.PEK or report.sig_algo != Algo.ECDSA_SHA256 or report.reserved:
        raise VerificationError(
            f"report signature fields usage {report.sig_usage:#x}, algo {report.sig_algo:#x}, reserved "
            f"{report.reserved:#x} (need PEK 0x1002, ECDSA_SHA256 0x2, 0)",
            check="signature",
        )
    key = pek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - algo checked above
        raise VerificationError("PEK key is not an elliptic-curve key", check="signature")
    if report.sig_r.bit_length() > 384 or report.sig_s.bit_length() > 384:
        raise VerificationError("report signature out of range", check="signature")
    try:
        key.verify(
            encode_dss_signature(report.sig_r, report.sig_s), report.signed_bytes, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise VerificationError("report signature does not verify with the PEK", check="signature") from None
    if mnonce is not None and not hmac.compare_digest(report.mnonce, mnonce):
        raise VerificationError(
            f"mnonce {report.mnonce.hex()} is not the expected {mnonce.hex()}", check="mnonce"
        )
    if launch_digest is not None and not hmac.compare_digest(report.launch_digest, launch_digest):
        raise VerificationError(
            f"launch digest {report.launch_digest.hex()} is not the expected {launch_digest.hex()}",
            check="launch_digest",
        )
    if policy is not None and report.policy != policy:
        raise VerificationError(f"policy {report.policy:#x} is not the expected {policy:#x}", check="policy")
    return VerifiedReport(report)


def sign_report_body(body: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Assemble a report from its first 0x34 bytes, signed by ``private_key`` (tests and tools that
    play the firmware's part)."""
    if len(body) != _SIGNED_END:
        raise FormatError(f"report body must be {_SIGNED_END} bytes, got {len(body)}", what=_WHAT)
    r, s = decode_dss_signature(private_key.sign(body, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(_COORD, "little") + s.to_bytes(_COORD, "little")
    return body + struct.pack("<III", Usage.PEK, Algo.ECDSA_SHA256, 0) + sig
