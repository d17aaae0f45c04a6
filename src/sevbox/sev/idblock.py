"""SEV-SNP ID block and ID authentication information (SNP ABI #56860, SNP_LAUNCH_FINISH).

The owner can bind a launch to an identity: the ID block (96 bytes) names the expected launch digest,
family/image IDs, guest SVN and policy, and is signed with the owner's ID key (ECDSA P-384, SHA-384).
Optionally the ID key itself is signed with an author key. The PSP checks both at SNP_LAUNCH_FINISH
and reports the SHA-384 digests of the two public keys in every attestation report.

Layouts (little-endian):

* ID block (0x60): LD (48) | FAMILY_ID (16) | IMAGE_ID (16) | VERSION u32 (1) | GUEST_SVN u32 | POLICY u64
* public key (0x404): CURVE u32 (2 = P-384) | QX (72, LE) | QY (72, LE) | reserved (0x370)
* signature (0x200): R (72, LE) | S (72, LE) | reserved (368)
* ID auth (0x1000): ID_KEY_ALGO u32 (1 = ECDSA P-384 SHA-384) | AUTH_KEY_ALGO u32 | reserved (0x38)
  | ID_BLOCK_SIG (0x200) | ID_KEY (0x404) | reserved (0x3c) | ID_KEY_SIG (0x200) | AUTHOR_KEY (0x404)
  | reserved (0x37c)

Signatures are randomised (ECDSA), so the ID auth differs from run to run; the ID block and the key
digests do not. QEMU takes them base64-encoded: ``-object sev-snp-guest,id-block=...,id-auth=...``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from sevbox.errors import FormatError, UsageError, VerificationError

__all__ = [
    "ID_AUTH_SIZE",
    "ID_BLOCK_SIZE",
    "IdBlock",
    "SignedIdBlock",
    "assemble_id_auth",
    "key_digest",
    "load_private_key",
    "public_key_bytes",
    "sign",
    "sign_id_block",
    "verify_id_auth",
]

ID_BLOCK_SIZE = 0x60
ID_AUTH_SIZE = 0x1000
PUBKEY_SIZE = 0x404
SIG_SIZE = 0x200
CURVE_P384 = 2
ALGO_ECDSA_P384_SHA384 = 1
DEFAULT_POLICY = 0x30000

_SIG_OFF, _ID_KEY_OFF, _ID_KEY_SIG_OFF, _AUTHOR_KEY_OFF = 0x40, 0x240, 0x680, 0x880


@dataclass(frozen=True, kw_only=True)
class IdBlock:
    launch_digest: bytes
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    version: int = 1
    guest_svn: int = 0
    policy: int = DEFAULT_POLICY

    def __post_init__(self) -> None:
        if len(self.launch_digest) != 48:
            raise UsageError(f"an SNP launch digest is 48 bytes, not {len(self.launch_digest)}")
        if len(self.family_id) != 16 or len(self.image_id) != 16:
            raise UsageError("family and image IDs are 16 bytes each")
        if not 0 <= self.guest_svn < 1 << 32 or not 0 <= self.version < 1 << 32:
            raise UsageError("version and guest SVN are 32-bit values")
        if not 0 <= self.policy < 1 << 64:
            raise UsageError("the SNP policy is a 64-bit value")

    def pack(self) -> bytes:
        return (
            self.launch_digest
            + self.family_id
            + self.image_id
            + struct.pack("<IIQ", self.version, self.guest_svn, self.policy)
        )


@dataclass(frozen=True, kw_only=True)
class SignedIdBlock:
    id_block: bytes
    id_auth: bytes
    id_key_digest: bytes
    author_key_digest: bytes | None

    def qemu_text(self) -> str:
        """Output in snp-create-id-block's format."""
        b64 = base64.b64encode
        lines = [
            f"id-block={b64(self.id_block).decode()},id-auth={b64(self.id_auth).decode()}",
            f"id_key_hash: {b64(self.id_key_digest).decode()}",
        ]
        if self.author_key_digest is not None:
            lines.append(f"author_key: {b64(self.author_key_digest).decode()}")
        return "\n".join(lines)


def load_private_key(pem: bytes, *, name: str = "key") -> ec.EllipticCurvePrivateKey:
    """A P-384 private key from PEM (or DER). FormatError for anything else."""
    try:
        key = (
            serialization.load_pem_private_key(pem, password=None)
            if pem.lstrip().startswith(b"-----")
            else serialization.load_der_private_key(pem, password=None)
        )
    except (ValueError, TypeError) as err:
        raise FormatError(f"{name} is not an unencrypted private key: {err}", what="private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise FormatError(f"{name} is not an EC P-384 private key (SNP needs P-384)", what="private key")
    return key


def public_key_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 0x404-byte SNP public key structure."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(pub.curve, ec.SECP384R1):
        raise UsageError("SNP ID and author keys must be on curve P-384")
    n = pub.public_numbers()
    body = struct.pack("<I", CURVE_P384) + n.x.to_bytes(72, "little") + n.y.to_bytes(72, "little")
    return body + bytes(PUBKEY_SIZE - len(body))


def key_digest(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """SHA-384 of the public key structure: ID_KEY_DIGEST / AUTHOR_KEY_DIGEST in reports."""
    return hashlib.sha384(public_key_bytes(key)).digest()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-384 SHA-384 signature in the SNP 0x200-byte layout."""
    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
    body = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return body + bytes(SIG_SIZE - len(body))


def assemble_id_auth(*, id_block_sig: bytes, id_key: bytes, author: tuple[bytes, bytes] | None) -> bytes:
    """The 0x1000-byte ID auth from its parts: signatures (0x200) and public keys (0x404);
    ``author`` is (signature of the ID key by the author key, author public key), or None."""
    if len(id_block_sig) != SIG_SIZE or len(id_key) != PUBKEY_SIZE:
        raise UsageError("an SNP signature is 0x200 bytes and a public key 0x404 bytes")
    auth = bytearray(ID_AUTH_SIZE)
    struct.pack_into("<II", auth, 0, ALGO_ECDSA_P384_SHA384, ALGO_ECDSA_P384_SHA384)
    auth[_SIG_OFF : _SIG_OFF + SIG_SIZE] = id_block_sig
    auth[_ID_KEY_OFF : _ID_KEY_OFF + PUBKEY_SIZE] = id_key
    if author is not None:
        id_key_sig, author_key = author
        if len(id_key_sig) != SIG_SIZE or len(author_key) != PUBKEY_SIZE:
            raise UsageError("an SNP signature is 0x200 bytes and a public key 0x404 bytes")
        auth[_ID_KEY_SIG_OFF : _ID_KEY_SIG_OFF + SIG_SIZE] = id_key_sig
        auth[_AUTHOR_KEY_OFF : _AUTHOR_KEY_OFF + PUBKEY_SIZE] = author_key
    return bytes(auth)


def sign_id_block(
    *, block: IdBlock, id_key: ec.EllipticCurvePrivateKey, author_key: ec.EllipticCurvePrivateKey | None
) -> SignedIdBlock:
    packed = block.pack()
    id_pub = public_key_bytes(id_key)
    author_digest = None
    author_parts = None
    if author_key is not None:
        author_parts = (sign(author_key, id_pub), public_key_bytes(author_key))
        author_digest = key_digest(author_key)
    auth = assemble_id_auth(id_block_sig=sign(id_key, packed), id_key=id_pub, author=author_parts)
    return SignedIdBlock(
        id_block=packed,
        id_auth=auth,
        id_key_digest=key_digest(id_key),
        author_key_digest=author_digest,
    )


def _public_key_from(struct_bytes: bytes, what: str) -> ec.EllipticCurvePublicKey:
    curve = int.from_bytes(struct_bytes[:4], "little")
    if curve != CURVE_P384:
        raise FormatError(f"{what} curve is {curve}, not P-384 (2)", what="SNP ID auth")
    x = int.from_bytes(struct_bytes[4:76], "little")
    y = int.from_bytes(struct_bytes[76:148], "little")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
    except ValueError:
        raise FormatError(f"{what} is not a point on P-384", what="SNP ID auth") from None


def _verify(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes, check: str) -> None:
    r = int.from_bytes(sig[:72], "little")
    s = int.from_bytes(sig[72:144], "little")
    try:
        pub.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise VerificationError(f"{check} does not verify", check=check) from None


def verify_id_auth(id_block: bytes, id_auth: bytes) -> tuple[bytes, bytes | None]:
    """Check the ID block signature (and the author's signature of the ID key, when present).

    Returns (ID key digest, author key digest or None) as the PSP would report them.
    """
    if len(id_block) != ID_BLOCK_SIZE or len(id_auth) != ID_AUTH_SIZE:
        raise FormatError("an ID block is 0x60 bytes and an ID auth 0x1000 bytes", what="SNP ID auth")
    id_pub_bytes = id_auth[_ID_KEY_OFF : _ID_KEY_OFF + PUBKEY_SIZE]
    id_pub = _public_key_from(id_pub_bytes, "ID key")
    _verify(id_pub, id_auth[_SIG_OFF : _SIG_OFF + SIG_SIZE], id_block, "ID block signature")
    author_bytes = id_auth[_AUTHOR_KEY_OFF : _AUTHOR_KEY_OFF + PUBKEY_SIZE]
    if not any(author_bytes):
        return hashlib.sha384(id_pub_bytes).digest(), None
    author_pub = _public_key_from(author_bytes, "author key")
    _verify(
        author_pub, id_auth[_ID_KEY_SIG_OFF : _ID_KEY_SIG_OFF + SIG_SIZE], id_pub_bytes, "ID key signature"
    )
    return hashlib.sha384(id_pub_bytes).digest(), hashlib.sha384(author_bytes).digest()
