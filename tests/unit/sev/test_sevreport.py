"""Legacy SEV attestation report: parse (unverified), then verify with the PEK."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError, VerificationError
from sevbox.sev import certs as C
from sevbox.sev import sevreport as R

DATA = Path(__file__).resolve().parents[2] / "data" / "sev"
PEK_KEY = ec.derive_private_key(0x5EB0C5, ec.SECP384R1())
PEK = C.parse_sev_cert(C.encode_sev_cert(C.Usage.PEK, C.Algo.ECDSA_SHA256, PEK_KEY.public_key()))
NONCE = bytes(range(16))
DIGEST = hashlib.sha256(b"launched").digest()
REPORT = R.sign_report_body(NONCE + DIGEST + struct.pack("<I", 0x05), PEK_KEY)


def test_parse_fields() -> None:
    rep = R.parse_report_unverified(REPORT)
    assert len(REPORT) == R.REPORT_SIZE == 0xD0
    assert (rep.mnonce, rep.launch_digest, rep.policy) == (NONCE, DIGEST, 5)
    assert (rep.sig_usage, rep.sig_algo, rep.reserved) == (0x1002, 0x2, 0)
    assert rep.to_json()["policy_names"] == ["NODBG", "ES"]


def test_verify_ok_and_expectations() -> None:
    rep = R.parse_report_unverified(REPORT)
    verified = R.verify_report(rep, PEK, mnonce=NONCE, launch_digest=DIGEST, policy=5)
    assert verified.policy.es
    for kwargs, check in (
        ({"mnonce": bytes(16)}, "mnonce"),
        ({"launch_digest": bytes(32)}, "launch_digest"),
        ({"policy": 1}, "policy"),
    ):
        with pytest.raises(VerificationError) as err:
            R.verify_report(rep, PEK, **kwargs)  # type: ignore[arg-type]
        assert err.value.check == check


def test_every_flipped_byte_fails() -> None:
    for pos in range(R.REPORT_SIZE):
        bad = bytearray(REPORT)
        bad[pos] ^= 0x04
        with pytest.raises(VerificationError) as err:
            R.verify_report(R.parse_report_unverified(bytes(bad)), PEK)
        assert err.value.check == "signature"


def test_wrong_key_and_real_pek() -> None:
    real_pek = C.parse_sev_cert((DATA / "rome" / "pek.cert").read_bytes())
    with pytest.raises(VerificationError, match="does not verify"):
        R.verify_report(R.parse_report_unverified(REPORT), real_pek)
    pdh = C.parse_sev_cert((DATA / "rome" / "pdh.cert").read_bytes())
    with pytest.raises(VerificationError, match="not a PEK"):
        R.verify_report(R.parse_report_unverified(REPORT), pdh)


def test_bad_length() -> None:
    with pytest.raises(FormatError, match="0xd0|208"):
        R.parse_report_unverified(REPORT[:-1])
    with pytest.raises(FormatError):
        R.sign_report_body(b"short", PEK_KEY)


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=0x100))
def test_random_bytes(data: bytes) -> None:
    try:
        rep = R.parse_report_unverified(data)
    except FormatError:
        return
    with pytest.raises(VerificationError):
        R.verify_report(rep, PEK)
