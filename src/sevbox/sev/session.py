"""The guest owner's LAUNCH_START session: GODH certificate, key derivation, wrapped TEK/TIK, MACs.

AMD SEV API #55766, "LAUNCH_START" and "Key Derivation", as sevctl's ``session`` command (through
the ``sev`` crate) builds it:

* The owner makes an ephemeral P-384 key and sends it as a GODH certificate: a 0x824-byte SEV
  certificate with version 1, API 0.0, usage PDH (0x1003), algorithm ECDH_SHA256 (0x3), curve 2,
  QX/QY little-endian, both signature slots empty (usage 0x1000, algorithm 0).
* Z = ECDH(GODH private key, platform PDH), the shared point's X coordinate, 48 big-endian bytes
  (what OpenSSL's derive returns).
* KDF = NIST SP800-108 counter mode with HMAC-SHA256 (PRF key K): block i = HMAC(K, u32le(i) ||
  label || 0x00 || context || u32le(bits)), i from 1.
  master = KDF(Z, "sev-master-secret", NONCE), KEK = KDF(master, "sev-kek", ""),
  KIK = KDF(master, "sev-kik", ""), 16 bytes each.
* WRAP_TK = AES-128-CTR(KEK, IV, TEK || TIK); WRAP_MAC = HMAC-SHA256(KIK, WRAP_TK);
  POLICY_MAC = HMAC-SHA256(TIK, u32le(policy)).
* Session blob (0x80): NONCE[16] WRAP_TK[32] WRAP_IV[16] WRAP_MAC[32] POLICY_MAC[32].

Randomness is an argument (``random``: n -> n bytes), so tests are exact; the CLI passes os.urandom.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sevbox.errors import FormatError
from sevbox.sev.certs import Algo, SevCertificate, Usage, encode_sev_cert

__all__ = [
    "SESSION_SIZE",
    "LaunchStart",
    "Session",
    "aes128_ctr",
    "derive_key",
    "godh_certificate",
    "hmac_sha256",
    "make_session",
    "session_blob",
    "start_session",
]

SESSION_SIZE = 0x80


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def aes128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR with a 16-byte initial counter block (encrypt and decrypt are the same)."""
    if len(key) != 16:
        raise FormatError(f"AES-128 key must be 16 bytes, got {len(key)}", what="key")
    if len(iv) != 16:
        raise FormatError(f"IV must be 16 bytes, got {len(iv)}", what="IV")
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def derive_key(key: bytes, label: str, context: bytes, size: int = 16) -> bytes:
    """NIST SP800-108 KDF in counter mode, HMAC-SHA256 PRF, little-endian counters (SEV's)."""
    bits = struct.pack("<I", size * 8)
    out = b""
    i = 1
    while len(out) < size:
        out += hmac_sha256(key, struct.pack("<I", i) + label.encode() + b"\x00" + context + bits)
        i += 1
    return out[:size]


@dataclass(frozen=True, slots=True)
class Session:
    """The LAUNCH_START session buffer fields."""

    nonce: bytes
    wrap_tk: bytes
    wrap_iv: bytes
    wrap_mac: bytes
    policy_mac: bytes

    def encode(self) -> bytes:
        return self.nonce + self.wrap_tk + self.wrap_iv + self.wrap_mac + self.policy_mac

    @classmethod
    def decode(cls, data: bytes) -> Session:
        if len(data) != SESSION_SIZE:
            raise FormatError(f"session blob must be {SESSION_SIZE} bytes, got {len(data)}", what="session")
        return cls(data[0:16], data[16:48], data[48:64], data[64:96], data[96:128])


def make_session(*, z: bytes, nonce: bytes, iv: bytes, tek: bytes, tik: bytes, policy: int) -> Session:
    """The session for a shared secret Z, as the firmware will unwrap it."""
    for name, value, size in (("nonce", nonce, 16), ("IV", iv, 16), ("TEK", tek, 16), ("TIK", tik, 16)):
        if len(value) != size:
            raise FormatError(f"{name} must be {size} bytes, got {len(value)}", what=name)
    if not 0 <= policy <= 0xFFFF_FFFF:
        raise FormatError(f"SEV policy {policy:#x} does not fit in 32 bits", what="SEV policy")
    master = derive_key(z, "sev-master-secret", nonce)
    kek = derive_key(master, "sev-kek", b"")
    kik = derive_key(master, "sev-kik", b"")
    wrap_tk = aes128_ctr(kek, iv, tek + tik)
    return Session(
        nonce=nonce,
        wrap_tk=wrap_tk,
        wrap_iv=iv,
        wrap_mac=hmac_sha256(kik, wrap_tk),
        policy_mac=hmac_sha256(tik, struct.pack("<I", policy)),
    )


def session_blob(session: Session) -> bytes:
    return session.encode()


def godh_certificate(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 0x824-byte GODH certificate for an ephemeral P-384 key (unsigned, as sevctl's)."""
    return encode_sev_cert(Usage.PDH, Algo.ECDH_SHA256, public_key)


@dataclass(frozen=True, slots=True)
class LaunchStart:
    """What the owner hands the host (GODH, session) and keeps (TEK, TIK)."""

    godh: bytes  # 0x824-byte certificate
    session: Session
    tek: bytes
    tik: bytes
    policy: int


def start_session(pdh: SevCertificate, policy: int, random: Callable[[int], bytes]) -> LaunchStart:
    """Make TEK, TIK, an ephemeral GODH key, and the session for the platform's ``pdh``.

    ``random(n)`` must return n fresh random bytes; it is called for TEK, TIK, the GODH private
    scalar (48 bytes, reduced into range), NONCE and IV, in that order.
    """
    if pdh.usage != Usage.PDH or pdh.algo not in (Algo.ECDH_SHA256, Algo.ECDH_SHA384):
        raise FormatError(
            f"not a PDH: usage {pdh.usage_name}, algorithm {pdh.algo:#x} (need PDH/ECDH)", what="PDH"
        )
    peer = pdh.public_key()
    if not isinstance(peer, ec.EllipticCurvePublicKey):  # pragma: no cover - algo checked above
        raise FormatError("PDH key is not an elliptic-curve key", what="PDH")
    tek, tik = random(16), random(16)
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
    scalar = int.from_bytes(random(48), "big") % (order - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP384R1())
    z = private.exchange(ec.ECDH(), peer)
    nonce, iv = random(16), random(16)
    session = make_session(z=z, nonce=nonce, iv=iv, tek=tek, tik=tik, policy=policy)
    return LaunchStart(
        godh=godh_certificate(private.public_key()), session=session, tek=tek, tik=tik, policy=policy
    )
