"""LAUNCH_START session: the sev crate's known answers, and a round trip through the firmware's side."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.sev import certs as C
from sevbox.sev import session as S

DATA = Path(__file__).resolve().parents[2] / "data" / "sev"


def counter_random(seed: int = 0) -> Callable[[int], bytes]:
    state = {"n": seed}

    def rnd(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(struct.pack("<Q", state["n"])).digest()
            state["n"] += 1
        return out[:n]

    return rnd


def test_kdf_known_answer() -> None:
    # virtee/sev src/session/key.rs test `derive`
    got = S.derive_key(bytes(16), "sev-master-secret", bytes(16))
    assert got.hex() == "ab4d269fcc62bedb4511d56c386ce706"


def test_kdf_longer_output_is_counter_mode() -> None:
    long = S.derive_key(b"k" * 16, "label", b"ctx", size=40)
    assert len(long) == 40
    # block 1 of a 40-byte output differs from a 16-byte output only through [L] (bits)
    block1 = hmac.new(b"k" * 16, b"\x01\0\0\0label\0ctx" + struct.pack("<I", 320), "sha256").digest()
    block2 = hmac.new(b"k" * 16, b"\x02\0\0\0label\0ctx" + struct.pack("<I", 320), "sha256").digest()
    assert long == (block1 + block2)[:40]


def test_session_known_answer() -> None:
    # virtee/sev src/session/mod.rs test `session`: z = nonce = iv = tek = tik = 0^16, policy 0
    z = bytes(16)
    s = S.make_session(z=z, nonce=bytes(16), iv=bytes(16), tek=bytes(16), tik=bytes(16), policy=0)
    assert s.wrap_tk.hex() == "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
    assert s.wrap_mac.hex() == "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
    assert s.policy_mac.hex() == "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
    blob = s.encode()
    assert len(blob) == S.SESSION_SIZE == 0x80
    assert blob[16:48] == s.wrap_tk and blob[64:96] == s.wrap_mac and blob[96:] == s.policy_mac
    assert S.Session.decode(blob) == s


def _firmware_unwrap(pdh_key: ec.EllipticCurvePrivateKey, godh: bytes, blob: bytes, policy: int) -> bytes:
    """What the SEV firmware does with GODH + session in LAUNCH_START (written from the spec)."""
    cert = C.parse_sev_cert(godh)
    peer = cert.public_key()
    assert isinstance(peer, ec.EllipticCurvePublicKey)
    z = pdh_key.exchange(ec.ECDH(), peer)
    s = S.Session.decode(blob)
    master = S.derive_key(z, "sev-master-secret", s.nonce)
    kek, kik = S.derive_key(master, "sev-kek", b""), S.derive_key(master, "sev-kik", b"")
    assert hmac.compare_digest(hmac.new(kik, s.wrap_tk, "sha256").digest(), s.wrap_mac)
    dec = Cipher(algorithms.AES(kek), modes.CTR(s.wrap_iv)).decryptor()
    tk = dec.update(s.wrap_tk) + dec.finalize()
    tik = tk[16:]
    assert hmac.compare_digest(hmac.new(tik, struct.pack("<I", policy), "sha256").digest(), s.policy_mac)
    return tk


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32))
def test_round_trip_through_the_firmware(policy: int, seed: int) -> None:
    pdh_key = ec.generate_private_key(ec.SECP384R1())
    pdh = C.parse_sev_cert(C.encode_sev_cert(C.Usage.PDH, C.Algo.ECDH_SHA256, pdh_key.public_key()))
    start = S.start_session(pdh, policy, counter_random(seed))
    assert _firmware_unwrap(pdh_key, start.godh, start.session.encode(), policy) == start.tek + start.tik


def test_godh_layout() -> None:
    start = S.start_session(
        C.parse_sev_cert((DATA / "rome" / "pdh.cert").read_bytes()), 0x33, counter_random()
    )
    godh = C.parse_sev_cert(start.godh)
    assert (godh.version, godh.api_major, godh.api_minor) == (1, 0, 0)
    assert (godh.usage, godh.algo) == (0x1003, 0x3)
    assert struct.unpack_from("<I", start.godh, 0x10)[0] == 2  # P-384
    assert all(s.usage == 0x1000 and s.algo == 0 and not any(s.sig) for s in godh.sigs)
    assert not any(start.godh[0x10 + 4 + 144 : 0x414])


def test_deterministic_with_fixed_randomness() -> None:
    pdh = C.parse_sev_cert((DATA / "naples" / "pdh.cert").read_bytes())
    a = S.start_session(pdh, 1, counter_random(7))
    b = S.start_session(pdh, 1, counter_random(7))
    c = S.start_session(pdh, 1, counter_random(8))
    assert a == b and a.session != c.session and a.godh != c.godh


def test_refuses_non_pdh_and_bad_sizes() -> None:
    pek = C.parse_sev_cert((DATA / "naples" / "pek.cert").read_bytes())
    with pytest.raises(FormatError, match="not a PDH"):
        S.start_session(pek, 0, counter_random())
    with pytest.raises(FormatError, match="TEK"):
        S.make_session(z=bytes(48), nonce=bytes(16), iv=bytes(16), tek=bytes(15), tik=bytes(16), policy=0)
    with pytest.raises(FormatError, match="32 bits"):
        S.make_session(z=bytes(48), nonce=bytes(16), iv=bytes(16), tek=bytes(16), tik=bytes(16), policy=2**32)
    with pytest.raises(FormatError):
        S.Session.decode(bytes(0x7F))
    with pytest.raises(FormatError):
        S.aes128_ctr(bytes(16), bytes(8), b"x")


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_session_decode_random(data: bytes) -> None:
    try:
        s = S.Session.decode(data)
    except FormatError:
        assert len(data) != S.SESSION_SIZE
    else:
        assert s.encode() == data
