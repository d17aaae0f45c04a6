"""`sevbox attest verify-chain | session | policy | secret | sev-report` end to end (through main())."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sevbox.cli import main
from sevbox.sev import certs as C
from sevbox.sev import session as S
from sevbox.sev import sevreport as R

DATA = Path(__file__).resolve().parents[2] / "data" / "sev"
SECRETS = DATA / "secret"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def export(tmp_path: Path, product: str, *, full: bool = True, flip: int | None = None) -> Path:
    blob = bytearray(
        b"".join((DATA / product / f"{n}.cert").read_bytes() for n in ("pdh", "pek", "oca", "cek"))
    )
    if full:
        ask, ark = C.builtin_ca(product)
        blob += ask + ark
    if flip is not None:
        blob[flip] ^= 0x01
    path = tmp_path / f"{product}-{flip}.cert"
    path.write_bytes(bytes(blob))
    return path


# --- verify-chain ----------------------------------------------------------------------------------


@pytest.mark.parametrize("product", ["naples", "rome"])
def test_verify_chain_real(capsys: pytest.CaptureFixture[str], tmp_path: Path, product: str) -> None:
    rc, out, _ = run(capsys, "attest", "verify-chain", str(export(tmp_path, product)))
    assert rc == 0
    for link in ("PEK -> PDH", "OCA self-signed", "OCA -> PEK", "CEK -> PEK", "ASK -> CEK", "ARK -> ASK"):
        assert f"{link} " in out
    assert "FAILED" not in out and out.rstrip().endswith("chain ok")
    rc, out, _ = run(capsys, "attest", "verify-chain", str(export(tmp_path, product, full=False)), "--json")
    data = json.loads(out)
    assert rc == 0 and data["ok"] and data["product"] == product and data["ca"] == "built-in"


def test_verify_chain_wrong_product(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(
        capsys, "attest", "verify-chain", str(export(tmp_path, "naples", full=False)), "--product", "rome"
    )
    assert rc == 1
    assert "ASK -> CEK       FAILED" in out
    assert "FAILED at ASK -> CEK" in err


@pytest.mark.parametrize(
    ("flip", "link"),
    [
        (0x20, "PEK -> PDH"),
        (0x824 + 0x30, "OCA -> PEK"),
        (2 * 0x824 + 0x500, "OCA self-signed"),
        (3 * 0x824 + 0x9, "ASK -> CEK"),
        (4 * 0x824 + 0x50, "ARK -> ASK"),
        (4 * 0x824 + 1600 + 0x300, "ARK self-signed"),
    ],
)
def test_verify_chain_flip_names_link(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flip: int, link: str
) -> None:
    rc, out, err = run(capsys, "attest", "verify-chain", str(export(tmp_path, "rome", flip=flip)), "--json")
    data = json.loads(out)
    assert rc == 1 and not data["ok"]
    failed = [x["link"] for x in data["links"] if not x["ok"]]
    assert link in failed and link in err


def test_verify_chain_single_certs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(capsys, "attest", "verify-chain", str(DATA / "rome" / "cek.cert"))
    assert rc == 0 and "ASK -> CEK" in out and "(rome," in out
    rc, out, _ = run(capsys, "attest", "verify-chain", str(DATA / "naples" / "oca.cert"))
    assert rc == 0 and "OCA self-signed  ok" in out
    rc, _, err = run(capsys, "attest", "verify-chain", str(DATA / "naples" / "pdh.cert"))
    assert rc == 2 and "lone PDH" in err
    ask, ark = C.builtin_ca("genoa")
    (tmp_path / "ask").write_bytes(ask)
    (tmp_path / "ark").write_bytes(ark)
    (tmp_path / "askark").write_bytes(ask + ark)
    rc, out, _ = run(capsys, "attest", "verify-chain", str(tmp_path / "ask"))
    assert rc == 0 and "ARK -> ASK" in out and "genoa" in out
    rc, out, _ = run(capsys, "attest", "verify-chain", str(tmp_path / "ark"))
    assert rc == 0 and "ARK self-signed" in out and "ARK is AMD's" in out
    rc, out, _ = run(capsys, "attest", "verify-chain", str(tmp_path / "askark"))
    assert rc == 0
    (tmp_path / "junk").write_bytes(b"x" * 100)
    rc, _, err = run(capsys, "attest", "verify-chain", str(tmp_path / "junk"))
    assert rc == 1 and "not a certificate chain" in err
    rc, _, err = run(capsys, "attest", "verify-chain", str(tmp_path / "missing"))
    assert rc == 2 and "cannot read" in err


def test_verify_chain_with_ca_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ask, ark = C.builtin_ca("rome")
    (tmp_path / "ca").write_bytes(ask + ark)
    rc, out, _ = run(
        capsys,
        "attest",
        "verify-chain",
        str(export(tmp_path, "rome", full=False)),
        "--ca",
        str(tmp_path / "ca"),
    )
    assert rc == 0 and "CA: --ca" in out
    (tmp_path / "naples-ca").write_bytes(b"".join(C.builtin_ca("naples")))
    rc, out, _ = run(
        capsys, "attest", "verify-chain", str(export(tmp_path, "rome")), "--ca", str(tmp_path / "naples-ca")
    )
    assert rc == 1 and "ASK -> CEK       FAILED" in out


def test_verify_chain_sevctl_spellings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    chain = str(export(tmp_path, "rome"))
    assert run(capsys, "attest", "verify-chain", "--sev", chain)[0] == 0
    assert run(capsys, "attest", "verify-chain", "--sev", chain, chain)[0] == 2
    assert run(capsys, "attest", "verify-chain")[0] == 2
    rc, out, _ = run(capsys, "attest", "verify-chain", chain, "--oca", str(DATA / "naples" / "oca.cert"))
    assert rc == 1 and "OCA -> PEK       FAILED" in out and "OCA self-signed  ok" in out
    assert run(capsys, "attest", "verify-chain", chain, "--oca", str(DATA / "rome" / "oca.cert"))[0] == 0
    rc, _, err = run(capsys, "attest", "verify-chain", str(DATA / "rome" / "cek.cert"), "--oca", chain)
    assert rc == 2 and "--oca replaces" in err


# --- session ---------------------------------------------------------------------------------------


def test_session_files_and_modes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(
        capsys,
        "attest",
        "session",
        str(export(tmp_path, "rome")),
        "0x33",
        "--name",
        "web",
        "--out-dir",
        str(tmp_path),
    )
    assert rc == 0
    for suffix, mode in (("tik.bin", 0o600), ("tek.bin", 0o600), ("godh.b64", 0o644), ("session.b64", 0o644)):
        path = tmp_path / f"web_{suffix}"
        assert str(path) in out
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert len((tmp_path / "web_tik.bin").read_bytes()) == 16
    godh = C.parse_sev_cert(base64.b64decode((tmp_path / "web_godh.b64").read_bytes()))
    assert godh.usage == C.Usage.PDH and godh.algo == C.Algo.ECDH_SHA256
    session = S.Session.decode(base64.b64decode((tmp_path / "web_session.b64").read_bytes()))
    tik = (tmp_path / "web_tik.bin").read_bytes()
    assert session.policy_mac == hmac.new(tik, struct.pack("<I", 0x33), "sha256").digest()


def test_session_refuses_broken_chain(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(
        capsys, "attest", "session", str(export(tmp_path, "rome", flip=0x30)), "1", "--out-dir", str(tmp_path)
    )
    assert rc == 1 and "PEK -> PDH" in err
    assert not list(tmp_path.glob("vm_*"))


def test_session_lone_pdh_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Our own PDH key plays the firmware: it must unwrap the TEK/TIK written to the files."""
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "pdh.cert").write_bytes(C.encode_sev_cert(C.Usage.PDH, C.Algo.ECDH_SHA256, key.public_key()))
    rc, _, err = run(
        capsys, "attest", "session", str(tmp_path / "pdh.cert"), "5", "--out-dir", str(tmp_path), "--json"
    )
    assert rc == 0 and "cannot be verified" in err
    godh = C.parse_sev_cert(base64.b64decode((tmp_path / "vm_godh.b64").read_bytes()))
    peer = godh.public_key()
    assert isinstance(peer, ec.EllipticCurvePublicKey)
    z = key.exchange(ec.ECDH(), peer)
    s = S.Session.decode(base64.b64decode((tmp_path / "vm_session.b64").read_bytes()))
    master = S.derive_key(z, "sev-master-secret", s.nonce)
    kek, kik = S.derive_key(master, "sev-kek", b""), S.derive_key(master, "sev-kik", b"")
    assert hmac.new(kik, s.wrap_tk, "sha256").digest() == s.wrap_mac
    dec = Cipher(algorithms.AES(kek), modes.CTR(s.wrap_iv)).decryptor()
    tk = dec.update(s.wrap_tk) + dec.finalize()
    assert tk == (tmp_path / "vm_tek.bin").read_bytes() + (tmp_path / "vm_tik.bin").read_bytes()


def test_session_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"x" * 10)
    assert run(capsys, "attest", "session", str(tmp_path / "short"), "1")[0] == 1
    assert run(capsys, "attest", "session", str(DATA / "rome" / "pdh.cert"), "zz")[0] == 2
    rc, _, err = run(capsys, "attest", "session", str(DATA / "rome" / "pdh.cert"), "0x40")
    assert rc == 2 and "reserved bits" in err
    assert run(capsys, "attest", "session", str(DATA / "rome" / "pdh.cert"), str(2**32))[0] == 1
    rc, _, err = run(
        capsys, "attest", "session", str(DATA / "rome" / "pdh.cert"), "1", "--out-dir", str(tmp_path / "no")
    )
    assert rc == 2 and "not a directory" in err


# --- policy ----------------------------------------------------------------------------------------


def test_policy_cli(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "attest", "policy", "0x33")
    assert rc == 0 and out.startswith("SEV policy 0x33 (NODBG NOKS DOMAIN SEV)")
    assert "API_MINOR" in out
    rc, out, _ = run(capsys, "attest", "policy", "--snp", "0x30000", "--json")
    data = json.loads(out)
    assert data["kind"] == "snp" and data["smt"] and data["value"] == "0x30000" and len(data["explain"]) == 13
    rc, out, _ = run(capsys, "attest", "policy", "--encode", "NODBG", "NOKS,ES")
    assert rc == 0 and out.startswith("SEV policy 0x7")
    rc, out, _ = run(capsys, "attest", "policy", "--snp", "--encode", "SMT", "ABI_MAJOR=1")
    assert out.startswith("SNP guest policy 0x30100")
    assert run(capsys, "attest", "policy", "--snp", "0x1000030000")[0] == 1
    assert run(capsys, "attest", "policy", "NODBG")[0] == 2
    assert run(capsys, "attest", "policy", "--encode", "BOGUS")[0] == 2
    assert run(capsys, "attest", "policy", "1", "2")[0] == 2


# --- secret ----------------------------------------------------------------------------------------

BLOB = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS"
IV = "rFR07U3TLH2YnsUj2SVZ7A=="
HEADER2 = "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="


def test_secret_sevctl_vector(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(
        capsys, "attest", "secret", "--tik", str(SECRETS / "tik1.bin"), "--tek", str(SECRETS / "tek1.bin"),
        "--launch-measure-blob", BLOB, "--iv", IV,
        "--secret", f"736869e5-84f0-4973-92ec-06879ce3da0b:{SECRETS / 'secret1.txt'}",
        "--secret", f"736869e5-aaaa-4973-92ec-06879ce3da0b:{SECRETS / 'secret2.txt'}",
        "--header", str(tmp_path / "h"), "--payload", str(tmp_path / "p"),
    )  # fmt: skip
    assert rc == 0 and "wrote header" in out
    assert base64.b64encode((tmp_path / "h").read_bytes()).decode() == HEADER2
    assert base64.b64encode((tmp_path / "p").read_bytes()).decode().startswith("0U3e5PcXv0UW+H4tSBFKObWY")


def test_secret_json_tk_alias_base64(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tek, tik = (SECRETS / "tek1.bin").read_bytes(), (SECRETS / "tik1.bin").read_bytes()
    (tmp_path / "tk").write_bytes(tek + tik)
    rc, out, _ = run(
        capsys, "attest", "secret", "--tk", str(tmp_path / "tk"), "--measurement", BLOB, "--iv", IV,
        "--inject-secret", f"luks-key:{SECRETS / 'secret1.txt'}", "--json", "--gpa", "0x800000",
        "--secret-header", str(tmp_path / "h"), "--secret-payload", str(tmp_path / "p"), "--base64",
    )  # fmt: skip
    assert rc == 0
    args = json.loads(out)
    assert args["packet-header"] == "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    assert args["gpa"] == 0x800000
    assert (tmp_path / "h").read_text() == args["packet-header"] and (tmp_path / "p").read_text() == args[
        "secret"
    ]
    # tik/tek as base64 strings (sevctl accepts "path or base64")
    rc, out2, _ = run(
        capsys, "attest", "secret", "--tik", base64.b64encode(tik).decode(),
        "--tek", base64.b64encode(tek).decode(), "--measurement", BLOB, "--iv", IV,
        "--secret", f"luks-key:{SECRETS / 'secret1.txt'}", "--json",
    )  # fmt: skip
    assert rc == 0 and json.loads(out2)["packet-header"] == args["packet-header"]


def test_secret_random_iv_differs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attest", "secret", "--tik", str(SECRETS / "tik1.bin"), "--tek", str(SECRETS / "tek1.bin"),
            "--measurement", BLOB, "--secret", f"luks-key:{SECRETS / 'secret1.txt'}", "--json"]  # fmt: skip
    a = json.loads(run(capsys, *argv)[1])
    b = json.loads(run(capsys, *argv)[1])
    assert a["packet-header"][:5] == "AAAAA" and a["packet-header"] != b["packet-header"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--secret", "disk:/nonexistent"], "neither a GUID"),
        (["--secret", "luks-key"], "GUID:PATH"),
        (["--secret", "luks-key:/nonexistent/x"], "cannot read"),
        (["--iv", "AAAA", "--secret", "luks-key:{s}"], "--iv must be 16 bytes"),
        (["--secret", "luks-key:{s}", "--tk", "{s}"], "either --tk"),
    ],
)
def test_secret_errors(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    s = str(SECRETS / "secret1.txt")
    argv = ["attest", "secret", "--tik", str(SECRETS / "tik1.bin"), "--tek", str(SECRETS / "tek1.bin"),
            "--measurement", BLOB, "--json", *[e.format(s=s) for e in extra]]  # fmt: skip
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and message in err


def test_secret_ovmf_area(capsys: pytest.CaptureFixture[str]) -> None:
    ovmf = str(DATA / "ovmf_sevctl_amdsev_trimmed.bin")
    base = ["attest", "secret", "--tik", str(SECRETS / "tik1.bin"), "--tek", str(SECRETS / "tek1.bin"),
            "--measurement", BLOB, "--json", "--ovmf", ovmf]  # fmt: skip
    rc, out, _ = run(capsys, *base, "--secret", f"luks-key:{SECRETS / 'secret1.txt'}")
    assert rc == 0 and json.loads(out)["gpa"] == 8437760  # the trimmed RHEL AmdSev OVMF's secret block
    rc, _, err = run(capsys, *base, "--secret", f"luks-key:{SECRETS / 'secret3.txt'}")
    assert rc == 2 and "secret area holds 3072" in err
    rc, _, err = run(
        capsys,
        *base[:-1],
        str(DATA / "ovmf_OvmfX64_suffix.bin"),
        "--secret",
        f"luks-key:{SECRETS / 'secret1.txt'}",
    )
    assert rc == 2 and "no launch-secret area" in err


def test_secret_needs_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(
        capsys, "attest", "secret", "--tik", str(SECRETS / "tik1.bin"), "--tek", str(SECRETS / "tek1.bin"),
        "--measurement", "bm90IGJhc2U2NA==", "--secret", f"luks-key:{SECRETS / 'secret1.txt'}",
    )  # fmt: skip
    assert rc == 2 and "--header and --payload" in err


# --- sev-report ------------------------------------------------------------------------------------


def _own_platform(tmp_path: Path) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    """A complete chain with our own keys (ARK, ASK RSA-2048; OCA, PEK, CEK, PDH P-384)."""
    ark_key = rsa.generate_private_key(65537, 2048)
    ask_key = rsa.generate_private_key(65537, 2048)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)

    def ca(kid: bytes, cid: bytes, usage: int, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey) -> bytes:
        n = key.public_key().public_numbers()
        body = (struct.pack("<I", 1) + kid + cid + struct.pack("<I", usage) + bytes(16)
                + struct.pack("<II", 2048, 2048)
                + n.e.to_bytes(256, "little") + n.n.to_bytes(256, "little"))  # fmt: skip
        return body + int.from_bytes(signer.sign(body, pss, hashes.SHA256()), "big").to_bytes(256, "little")

    ark = ca(b"R" * 16, b"R" * 16, 0x0, ark_key, ark_key)
    ask = ca(b"S" * 16, b"R" * 16, 0x13, ask_key, ark_key)
    keys = {u: ec.generate_private_key(ec.SECP384R1()) for u in ("oca", "pek", "cek", "pdh")}
    oca = C.sign_sev_cert(
        C.encode_sev_cert(C.Usage.OCA, C.Algo.ECDSA_SHA256, keys["oca"].public_key()),
        C.Usage.OCA,
        keys["oca"],
    )
    cek = C.encode_sev_cert(C.Usage.CEK, C.Algo.ECDSA_SHA256, keys["cek"].public_key())
    sig = int.from_bytes(ask_key.sign(cek[:0x414], pss, hashes.SHA256()), "big").to_bytes(256, "little")
    cek = cek[:0x414] + struct.pack("<II", 0x13, 0x1) + sig.ljust(0x200, b"\0") + cek[0x414 + 8 + 0x200 :]
    pek = C.encode_sev_cert(C.Usage.PEK, C.Algo.ECDSA_SHA256, keys["pek"].public_key())
    pek = C.sign_sev_cert(C.sign_sev_cert(pek, C.Usage.OCA, keys["oca"]), C.Usage.CEK, keys["cek"])
    pdh = C.sign_sev_cert(
        C.encode_sev_cert(C.Usage.PDH, C.Algo.ECDH_SHA256, keys["pdh"].public_key()), C.Usage.PEK, keys["pek"]
    )
    (tmp_path / "chain").write_bytes(pdh + pek + oca + cek)
    (tmp_path / "ca").write_bytes(ask + ark)
    return tmp_path / "chain", tmp_path / "ca", keys["pek"]


def test_sev_report_show_and_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    chain, ca, pek_key = _own_platform(tmp_path)
    digest = hashlib.sha256(b"ovmf").digest()
    report = R.sign_report_body(bytes(range(16)) + digest + struct.pack("<I", 0x33), pek_key)
    (tmp_path / "r").write_bytes(report)
    rc, out, _ = run(capsys, "attest", "sev-report", str(tmp_path / "r"))
    assert rc == 0 and "NOT verified" in out and digest.hex() in out
    rc, out, _ = run(capsys, "attest", "sev-report", base64.b64encode(report).decode(), "--json")
    assert json.loads(out)["verified"] is False
    rc, out, _ = run(
        capsys, "attest", "sev-report", str(tmp_path / "r"), "--chain", str(chain), "--ca", str(ca),
        "--mnonce", bytes(range(16)).hex(), "--launch-digest", digest.hex(), "--policy", "0x33",
    )  # fmt: skip
    assert rc == 0, out
    assert "signature (PEK)" in out and "launch_digest" in out and "FAILED" not in out
    rc, out, err = run(
        capsys, "attest", "sev-report", str(tmp_path / "r"), "--chain", str(chain), "--ca", str(ca),
        "--policy", "0x1", "--json",
    )  # fmt: skip
    assert rc == 1 and "policy" in err
    assert [c["check"] for c in json.loads(out)["checks"] if not c["ok"]] == ["policy"]
    bad = bytearray(report)
    bad[0x20] ^= 1
    (tmp_path / "bad").write_bytes(bytes(bad))
    rc, out, err = run(
        capsys, "attest", "sev-report", str(tmp_path / "bad"), "--chain", str(chain), "--ca", str(ca)
    )
    assert rc == 1 and "signature (PEK)" in err
    # the built-in AMD CA does not vouch for our own platform
    rc, out, err = run(capsys, "attest", "sev-report", str(tmp_path / "r"), "--chain", str(chain))
    assert rc == 1 and "ASK -> CEK" in err


def test_sev_report_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(bytes(10))
    assert run(capsys, "attest", "sev-report", str(tmp_path / "short"))[0] == 1
    assert run(capsys, "attest", "sev-report", "!!notbase64")[0] == 2
    (tmp_path / "r").write_bytes(bytes(0xD0))
    assert run(capsys, "attest", "sev-report", str(tmp_path / "r"), "--policy", "1")[0] == 2


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for verb, phrase in (
        ("verify-chain", "sevctl export"),
        ("session", "0600"),
        ("policy", "--encode"),
        ("secret", "luks-key"),
        ("sev-report", "--chain"),
    ):
        with pytest.raises(SystemExit):
            main(["attest", verb, "--help"])
        out = capsys.readouterr().out
        assert phrase in out and "sevbox attest" in out
