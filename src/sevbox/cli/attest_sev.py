"""``sevbox attest verify-chain | session | policy | secret | sev-report``: the SEV/SEV-ES owner's kit.

Thin verbs: read files (the edge), call :mod:`sevbox.sev` (pure), print. Option names follow sevctl
and virt-qemu-sev-validate where those tools have them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from pathlib import Path
from typing import Any

from sevbox.cli.common import int0, read_bytes
from sevbox.errors import FormatError, UsageError, VerificationError

__all__ = ["configure"]


# --- helpers (the edge) ----------------------------------------------------------------------------


def _path_or_b64(value: str, what: str) -> bytes:
    """sevctl's convention: an existing file's bytes, else the value decoded as base64."""
    if os.path.exists(value):
        return read_bytes(value, what)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what}: {value!r} is neither a file nor base64") from None


def _hex_or_b64(value: str, size: int, what: str) -> bytes:
    text = value.strip()
    try:
        data = bytes.fromhex(text[2:] if text.lower().startswith("0x") else text)
    except ValueError:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{what}: {value!r} is neither hex nor base64") from None
    if len(data) != size:
        raise UsageError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` (also when the file already exists)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


# --- verify-chain ----------------------------------------------------------------------------------

_CHAIN_DESC = """\
Verify an SEV platform certificate chain back to AMD's root key, link by link:
OCA self-signed, OCA -> PEK, CEK -> PEK, PEK -> PDH, ASK -> CEK, ARK -> ASK, ARK self-signed.
Each link is printed ok/FAILED; the exit status is 0 only when every link holds.

FILE is what `sevctl export` writes (PDH|PEK|OCA|CEK, then ASK|ARK with --full), or a single
certificate (a CEK is checked up to the ARK, an OCA or ARK for its self-signature, an ASK against
the built-in ARKs). The ARK/ASK are AMD's built-in ones for the product, found from the CEK or named
with --product; an ARK inside FILE must be byte-equal to a built-in one ("ARK is AMD's"), since the
host wrote FILE. --ca names an ASK|ARK file you trust instead.

  sevctl export --full chain.cert      # on the host
  sevbox attest verify-chain chain.cert
  sevbox attest verify-chain chain.cert --product rome --json
"""


def _configure_chain(parser: argparse.ArgumentParser) -> None:
    from sevbox.sev.certs import PRODUCTS

    a = parser.add_argument
    a(
        "file",
        metavar="FILE",
        nargs="?",
        help="sevctl export output (PDH|PEK|OCA|CEK[|ASK|ARK]) or one certificate",
    )
    a("--sev", metavar="FILE", help="the same as FILE (sevctl verify's spelling)")
    a("--oca", metavar="FILE", help="use this OCA certificate instead of the one in FILE (as sevctl verify)")
    a("--ca", metavar="ASK_ARK_FILE", help="trusted ASK|ARK file to use instead of the built-in ones")
    a("--product", choices=PRODUCTS, help="AMD product whose built-in ARK/ASK to use (default: from the CEK)")
    a("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run_chain)


def _chain_report(
    data: bytes, ca: tuple[bytes, bytes] | None, product: str | None, oca: bytes | None = None
) -> Any:
    from sevbox.sev import certs as C

    ask, ark = ca if ca is not None else (None, None)
    kw: dict[str, Any] = {"product": product, "ca_from_user": ca is not None}
    if len(data) >= 4 * C.SEV_CERT_SIZE:
        e = C.parse_export(data)
        return C.verify_chain(
            e.pdh, e.pek, oca if oca is not None else e.oca, e.cek,
            ask=ask if ca else e.ask, ark=ark if ca else e.ark, **kw,
        )  # fmt: skip
    if oca is not None:
        raise UsageError("--oca replaces the OCA of a whole chain: FILE must be the sevctl export output")
    if len(data) == C.SEV_CERT_SIZE:
        cert = C.parse_sev_cert(data)
        if cert.usage == C.Usage.CEK:
            return C.verify_chain(None, None, None, data, ask=ask, ark=ark, **kw)
        if cert.usage == C.Usage.OCA:
            return C.verify_chain(None, None, data, None, **kw)
        raise UsageError(
            f"a lone {cert.usage_name} certificate cannot be verified: give the whole `sevctl export` output"
        )
    if len(data) in C.CA_CERT_SIZES:
        cert_ca = C.parse_ca_cert(data)
        if cert_ca.usage == C.Usage.ARK:
            return C.verify_chain(None, None, None, None, ark=data, **kw)
        if cert_ca.usage == C.Usage.ASK:
            reports = [
                C.verify_chain(None, None, None, None, ask=data, ark=C.builtin_ca(p)[1], product=p)
                for p in ([product] if product else C.PRODUCTS)
            ]
            good = [r for r in reports if r.ok]
            return good[0] if good else reports[0]
        raise FormatError(
            f"CA certificate usage {cert_ca.usage:#x} is neither ARK nor ASK", what="AMD CA certificate"
        )
    if len(data) in (2 * s for s in C.CA_CERT_SIZES):
        a_, k_ = C.parse_ca_chain(data)
        return C.verify_chain(None, None, None, None, ask=a_, ark=k_, **kw)
    raise FormatError(
        f"{len(data)} bytes is not a certificate chain ({4 * C.SEV_CERT_SIZE} or more), an SEV certificate "
        f"({C.SEV_CERT_SIZE}) or an AMD CA certificate ({' or '.join(map(str, C.CA_CERT_SIZES))})",
        what="SEV chain",
    )


def _load_ca(path: str | None) -> tuple[bytes, bytes] | None:
    if path is None:
        return None
    from sevbox.sev.certs import parse_ca_chain

    return parse_ca_chain(read_bytes(path, "--ca"))


def _print_links(report: Any) -> None:
    width = max((len(x.name) for x in report.links), default=0)
    for link in report.links:
        status = "ok" if link.ok else f"FAILED: {link.reason}"
        print(f"  {link.name:<{width}}  {status}")


def _raise_failed(report: Any, what: str) -> None:
    bad = report.failed[0] if report.failed else None
    if bad is None:
        raise VerificationError(f"{what}: nothing was verified", check="chain")
    names = ", ".join(x.name for x in report.failed)
    raise VerificationError(f"{what} FAILED at {names}", check=bad.name)


def _run_chain(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.sev is None):
        raise UsageError("give the chain file once: FILE or --sev FILE")
    oca = read_bytes(args.oca, "--oca") if args.oca else None
    report = _chain_report(
        read_bytes(args.file or args.sev, "certificate file"), _load_ca(args.ca), args.product, oca
    )
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"SEV certificate chain ({report.product or 'unknown product'}, CA: {report.ca_source}):")
        _print_links(report)
    if not report.ok:
        _raise_failed(report, "certificate chain")
    if not args.json:
        print("chain ok")
    return 0


# --- session ---------------------------------------------------------------------------------------

_SESSION_DESC = """\
Make a launch session for an SEV or SEV-ES guest, as `sevctl session` does: fresh TEK and TIK, an
ephemeral GODH key agreed with the platform's PDH, and the session blob that wraps TEK/TIK for the
firmware. Writes NAME_tik.bin and NAME_tek.bin (mode 0600: keep them, they prove the launch and
encrypt secrets), NAME_godh.b64 and NAME_session.b64 (give these to the host: QEMU sev-guest
dh-cert-file= and session-file=).

PDH is the platform's PDH certificate or its whole `sevctl export` output. With a whole export the
chain is verified first (built-in AMD ARK/ASK, as verify-chain) and a broken chain is refused; a
lone PDH cannot be checked and is used as given (a warning says so). POLICY is the guest policy,
decimal or 0x hex (see `sevbox attest policy`).

  sevbox attest session chain.cert 0x33 --name web --out-dir ./keys
  qemu-system-x86_64 ... -object sev-guest,id=sev0,policy=0x33,dh-cert-file=keys/web_godh.b64,\\
      session-file=keys/web_session.b64,cbitpos=51,reduced-phys-bits=1
"""


def _configure_session(parser: argparse.ArgumentParser) -> None:
    from sevbox.sev.certs import PRODUCTS

    a = parser.add_argument
    a("pdh", metavar="PDH", help="platform PDH certificate, or the whole sevctl export output")
    a("policy", metavar="POLICY", type=int0, help="guest policy (u32), e.g. 0x33")
    a("--name", default="vm", help="file name prefix (default vm)")
    a("--out-dir", metavar="DIR", default=".", help="directory for the four files (default .)")
    a("--ca", metavar="ASK_ARK_FILE", help="trusted ASK|ARK file for the chain check")
    a("--product", choices=PRODUCTS, help="AMD product of the platform (default: from the CEK)")
    a("--json", action="store_true", help="also print the GODH and session (base64) as JSON")
    parser.set_defaults(handler=_run_session)


def _run_session(args: argparse.Namespace) -> int:
    from sevbox.sev import certs as C
    from sevbox.sev.policy import SevPolicy
    from sevbox.sev.session import start_session

    policy = SevPolicy.decode(args.policy)
    if policy.reserved:
        raise UsageError(f"policy {args.policy:#x} sets reserved bits 15:6; the firmware would refuse it")
    data = read_bytes(args.pdh, "PDH file")
    if len(data) == C.SEV_CERT_SIZE:
        pdh = C.parse_sev_cert(data)
        print(
            "sevbox: warning: a lone PDH cannot be verified; pass the whole `sevctl export --full` output",
            file=sys.stderr,
        )
    elif len(data) >= 4 * C.SEV_CERT_SIZE:
        export = C.parse_export(data)
        pdh = C.verified_pdh(export, product=args.product, ca=_load_ca(args.ca))
    else:
        raise FormatError(
            f"PDH file must be one SEV certificate ({C.SEV_CERT_SIZE} bytes) or a sevctl export, "
            f"got {len(data)}",
            what="PDH",
        )
    start = start_session(pdh, policy.encode(), os.urandom)
    out = Path(args.out_dir)
    if not out.is_dir():
        raise UsageError(f"--out-dir {out} is not a directory")
    files = {
        "tik": out / f"{args.name}_tik.bin",
        "tek": out / f"{args.name}_tek.bin",
        "godh": out / f"{args.name}_godh.b64",
        "session": out / f"{args.name}_session.b64",
    }
    godh64 = base64.b64encode(start.godh)
    session64 = base64.b64encode(start.session.encode())
    _write(files["tik"], start.tik, 0o600)
    _write(files["tek"], start.tek, 0o600)
    _write(files["godh"], godh64, 0o644)
    _write(files["session"], session64, 0o644)
    if args.json:
        _print_json(
            {
                "policy": f"{policy.encode():#x}",
                "godh": godh64.decode(),
                "session": session64.decode(),
                "files": {k: str(v) for k, v in files.items()},
            }
        )
    else:
        for key in ("tik", "tek", "godh", "session"):
            print(f"wrote {files[key]}")
    return 0


# --- policy ----------------------------------------------------------------------------------------

_POLICY_DESC = """\
Decode a guest policy and explain every bit, or build one from names with --encode.

SEV/SEV-ES policy (u32): NODBG, NOKS, ES, NOSEND, DOMAIN, SEV flags, API_MAJOR=N, API_MINOR=N.
SNP guest policy (u64, --snp): SMT, MIGRATE_MA, DEBUG, SINGLE_SOCKET, CXL_ALLOW, MEM_AES_256_XTS,
RAPL_DIS, CIPHERTEXT_HIDING, PAGE_SWAP_DISABLE, ABI_MAJOR=N, ABI_MINOR=N (bit 17 is always set;
reserved bits are refused).

  sevbox attest policy 0x33
  sevbox attest policy --snp 0x30000 --json
  sevbox attest policy --encode NODBG NOKS ES          # -> 0x7
  sevbox attest policy --snp --encode SMT ABI_MAJOR=1  # -> 0x30100
"""


def _configure_policy(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("value", metavar="VALUE", nargs="+", help="the policy (decimal or 0x hex), or names with --encode")
    a("--snp", action="store_true", help="an SEV-SNP guest policy (u64) rather than SEV/SEV-ES (u32)")
    a("--encode", action="store_true", help="VALUE is a list of flag names (and FIELD=N); print the number")
    a("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run_policy)


def _run_policy(args: argparse.Namespace) -> int:
    from sevbox.sev.policy import SevPolicy, SnpPolicy

    cls: type[SevPolicy] | type[SnpPolicy] = SnpPolicy if args.snp else SevPolicy
    if args.encode:
        names = [n for v in args.value for n in v.replace(",", " ").split()]
        policy: SevPolicy | SnpPolicy = cls.from_names(names)
    else:
        if len(args.value) != 1:
            raise UsageError("give one policy value (or --encode with names)")
        try:
            number = int(args.value[0], 0)
        except ValueError:
            raise UsageError(f"policy {args.value[0]!r} is not a number (use --encode for names)") from None
        policy = cls.decode(number)
    if args.json:
        data = policy.to_json()
        data["kind"] = "snp" if args.snp else "sev"
        data["explain"] = [{"field": f, "meaning": m} for f, m in policy.explain()]
        _print_json(data)
        return 0
    kind = "SNP guest policy" if args.snp else "SEV policy"
    print(f"{kind} {policy.encode():#x}" + (f" ({' '.join(policy.names())})" if policy.names() else ""))
    width = max(len(f) for f, _ in policy.explain())
    for field, meaning in policy.explain():
        print(f"  {field:<{width}}  {meaning}")
    return 0


# --- secret ----------------------------------------------------------------------------------------

_SECRET_DESC = """\
Build a LAUNCH_SECRET packet for a launched, paused SEV/SEV-ES guest, as `sevctl secret build`
and virt-qemu-sev-validate do: the secret table (OVMF's format), AES-128-CTR under the TEK, and a
header whose HMAC (TIK) binds flags, IV, lengths, ciphertext and the guest's launch measurement, so
only that guest's firmware accepts it. Check the measurement first (sevbox attest validate).

--tik/--tek are files or base64 (sevctl's), or --tk is a 32-byte TEK||TIK file (libvirt's).
--measurement is the base64 (or a file) of the LAUNCH_MEASURE blob (QMP query-sev-launch-measure,
virsh domlaunchsecinfo); its first 32 bytes are the measurement. --secret GUID:PATH or ALIAS:PATH
adds one secret (repeatable); alias luks-key is OVMF's disk passphrase GUID
736869e5-84f0-4973-92ec-06879ce3da0b. Header and payload are written raw (sevctl) or, with
--base64, as base64 text (virt-qemu-sev-validate). --json prints the arguments of QEMU's
sev-inject-launch-secret. --ovmf checks that the table fits the firmware's secret area (3 KiB in
current AmdSev builds) and gives its address as "gpa".

  sevbox attest secret --tik vm_tik.bin --tek vm_tek.bin --measurement "$(cat measure.b64)" \\
      --secret luks-key:passphrase.txt --header hdr.bin --payload payload.bin
  sevbox attest secret --tk tk.bin --measurement M --secret luks-key:pw.txt --json
"""  # noqa: S105 (help text, not a password)


def _configure_secret(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--tik", metavar="TIK", help="transport integrity key: 16-byte file or base64")
    a("--tek", metavar="TEK", help="transport encryption key: 16-byte file or base64")
    a("--tk", metavar="PATH", help="32-byte TEK||TIK file (instead of --tik/--tek)")
    a(
        "--measurement",
        "--launch-measure-blob",
        dest="measurement",
        required=True,
        metavar="B64",
        help="LAUNCH_MEASURE blob (48 bytes) or measurement (32), base64 or file",
    )
    a(
        "--secret",
        "--inject-secret",
        dest="secret",
        action="append",
        default=[],
        required=True,
        metavar="GUID:PATH",
        help="a secret: GUID or alias (luks-key), colon, file holding the value; repeatable",
    )
    a("--iv", metavar="B64", help="16-byte IV in base64 (default: random; fix it only for tests)")
    a("--header", "--secret-header", dest="header", metavar="OUT", help="write the packet header here")
    a("--payload", "--secret-payload", dest="payload", metavar="OUT", help="write the encrypted table here")
    a("--base64", action="store_true", help="write header and payload as base64 text")
    a("--gpa", type=int0, metavar="ADDR", help="guest address of the secret area (for --json; optional)")
    a(
        "--ovmf",
        metavar="PATH",
        help="the guest's OVMF: check the table fits its launch-secret area, and take --gpa from it",
    )
    a("--json", action="store_true", help="print QEMU's sev-inject-launch-secret arguments as JSON")
    parser.set_defaults(handler=_run_secret)


def _keys(args: argparse.Namespace) -> tuple[bytes, bytes]:
    if args.tk:
        if args.tik or args.tek:
            raise UsageError("give either --tk or --tik and --tek")
        tk = read_bytes(args.tk, "--tk")
        if len(tk) != 32:
            raise UsageError(f"--tk must hold 32 bytes (TEK||TIK), got {len(tk)}")
        return tk[:16], tk[16:]
    if not (args.tik and args.tek):
        raise UsageError("need --tik and --tek (or --tk)")
    tik, tek = _path_or_b64(args.tik, "--tik"), _path_or_b64(args.tek, "--tek")
    for name, key in (("--tik", tik), ("--tek", tek)):
        if len(key) != 16:
            raise UsageError(f"{name} must be 16 bytes, got {len(key)}")
    return tek, tik


def _run_secret(args: argparse.Namespace) -> int:
    from sevbox.sev import secret as X

    if not args.json and not (args.header and args.payload):
        raise UsageError("need --header and --payload (or --json)")
    tek, tik = _keys(args)
    measurement = _path_or_b64(args.measurement, "--measurement")
    if len(measurement) not in (32, 48):
        raise UsageError(f"--measurement must be 32 or 48 bytes, got {len(measurement)}")
    pairs = []
    for spec in args.secret:
        name, sep, path = spec.partition(":")
        if not sep or not path:
            raise UsageError(f"--secret {spec!r}: expected GUID:PATH or ALIAS:PATH")
        pairs.append((X.resolve_guid(name), read_bytes(path, "secret file")))
    iv = _hex_or_b64(args.iv, 16, "--iv") if args.iv else os.urandom(16)
    table = X.build_table(pairs)
    gpa = args.gpa
    if args.ovmf:
        from sevbox.sev.ovmf import parse_ovmf

        area = parse_ovmf(read_bytes(args.ovmf, "--ovmf")).sev_secret_block
        if area is None:
            raise UsageError(f"{args.ovmf} has no launch-secret area (an OvmfPkg/AmdSev build has one)")
        if len(table) > area[1]:
            raise UsageError(
                f"the secret table is {len(table)} bytes; {args.ovmf}'s secret area holds {area[1]}"
            )
        if gpa is None:
            gpa = area[0]
    packet = X.build_packet(tek=tek, tik=tik, measurement=measurement, iv=iv, table=table)
    if args.header and args.payload:
        header, payload = packet.header, packet.payload
        if args.base64:
            header, payload = base64.b64encode(header), base64.b64encode(payload)
        _write(Path(args.header), header, 0o644)
        _write(Path(args.payload), payload, 0o644)
        if not args.json:
            print(f"wrote header to {args.header}")
            print(f"wrote payload to {args.payload}")
    if args.json:
        _print_json(X.qemu_inject_args(packet, gpa))
    return 0


# --- sev-report ------------------------------------------------------------------------------------

_REPORT_DESC = """\
Show or verify a legacy SEV attestation report (0xD0 bytes, from the ATTESTATION command: QMP
query-sev-attestation-report, base64, or a file). Without --chain the fields are printed,
unverified. With --chain (the platform's `sevctl export` output) the chain is verified first, then
the report's signature with that chain's PEK, then each expectation given (--mnonce,
--launch-digest, --policy); each check prints ok/FAILED and the exit status is 0 only if all hold.

  sevbox attest sev-report report.bin
  sevbox attest sev-report "$(cat report.b64)" --chain chain.cert --mnonce 00112233...ff \\
      --launch-digest "$(sevbox attest measure --mode sev --ovmf OVMF.fd)" --policy 0x33
"""


def _configure_report(parser: argparse.ArgumentParser) -> None:
    from sevbox.sev.certs import PRODUCTS

    a = parser.add_argument
    a("report", metavar="REPORT", help="the report: a file or base64")
    a("--chain", metavar="FILE", help="platform chain (sevctl export); verifies the report")
    a("--ca", metavar="ASK_ARK_FILE", help="trusted ASK|ARK file for the chain check")
    a("--product", choices=PRODUCTS, help="AMD product of the platform (default: from the CEK)")
    a("--mnonce", metavar="HEX", help="expected nonce (16 bytes, hex or base64)")
    a("--launch-digest", metavar="HEX", help="expected launch digest (32 bytes, hex or base64)")
    a("--policy", type=int0, metavar="N", help="expected guest policy")
    a("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from sevbox.sev import certs as C
    from sevbox.sev import sevreport as R

    report = R.parse_report_unverified(_path_or_b64(args.report, "REPORT"))
    if not args.chain:
        if args.mnonce or args.launch_digest or args.policy is not None:
            raise UsageError("checking --mnonce/--launch-digest/--policy needs --chain (the report's signer)")
        fields = report.to_json()
        if args.json:
            _print_json({"verified": False, **fields})
        else:
            print("SEV attestation report (NOT verified: give --chain to check it)")
            for key, value in fields.items():
                print(f"  {key:<14} {' '.join(value) if isinstance(value, list) else value}")
        return 0
    data = read_bytes(args.chain, "--chain")
    if len(data) < 4 * C.SEV_CERT_SIZE:
        raise UsageError("--chain must be the whole sevctl export output (PDH|PEK|OCA|CEK[|ASK|ARK])")
    export = C.parse_export(data)
    ca = _load_ca(args.ca)
    chain = C.verify_chain(
        export.pdh, export.pek, export.oca, export.cek,
        ask=ca[0] if ca else export.ask, ark=ca[1] if ca else export.ark,
        product=args.product, ca_from_user=ca is not None,
    )  # fmt: skip
    checks: list[tuple[str, bool, str]] = [(f"chain: {x.name}", x.ok, x.reason) for x in chain.links]
    if chain.ok:
        pek = C.parse_sev_cert(export.pek)
        expect: list[tuple[str, dict[str, Any]]] = [("signature (PEK)", {})]
        if args.mnonce:
            expect.append(("mnonce", {"mnonce": _hex_or_b64(args.mnonce, 16, "--mnonce")}))
        if args.launch_digest:
            expect.append(
                ("launch_digest", {"launch_digest": _hex_or_b64(args.launch_digest, 32, "--launch-digest")})
            )
        if args.policy is not None:
            expect.append(("policy", {"policy": args.policy}))
        signature_ok = True
        for name, kw in expect:
            if not signature_ok:
                checks.append((name, False, "not checked: the signature failed"))
                continue
            try:
                R.verify_report(report, pek, **kw)
            except VerificationError as err:
                checks.append((name, False, err.message))
                signature_ok = name != "signature (PEK)"
            else:
                checks.append((name, True, ""))
    else:
        checks.append(("signature (PEK)", False, "not checked: the chain failed"))
    ok = all(c[1] for c in checks)
    if args.json:
        _print_json(
            {
                "ok": ok,
                "verified": ok,
                "report": report.to_json(),
                "checks": [{"check": n, "ok": k, "reason": r} for n, k, r in checks],
            }
        )
    else:
        width = max(len(c[0]) for c in checks)
        print("SEV attestation report:")
        for name, good, reason in checks:
            print(f"  {name:<{width}}  {'ok' if good else 'FAILED: ' + reason}")
    if not ok:
        failed = [c[0] for c in checks if not c[1]]
        raise VerificationError(f"SEV attestation report FAILED at {', '.join(failed)}", check=failed[0])
    if not args.json:
        for key, value in report.to_json().items():
            print(f"  {key:<14} {' '.join(value) if isinstance(value, list) else value}")
    return 0


# --- dispatch --------------------------------------------------------------------------------------

_VERBS = {
    "verify-chain": (_CHAIN_DESC, _configure_chain),
    "session": (_SESSION_DESC, _configure_session),
    "policy": (_POLICY_DESC, _configure_policy),
    "secret": (_SECRET_DESC, _configure_secret),
    "sev-report": (_REPORT_DESC, _configure_report),
}


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    desc, setup = _VERBS[verb]
    parser.description = desc
    setup(parser)
