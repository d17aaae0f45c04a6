"""``sevbox attest report show|verify`` and ``sevbox attest fetch ca|vcek|crl`` (SEV-SNP)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from sevbox.errors import FormatError, UsageError

__all__ = ["configure"]

_REPORT_HELP = "attestation report file: raw 0x4A0 bytes or hex text ('-' reads stdin)"
_PRODUCTS = ("milan", "genoa", "turin")

_SHOW_DESC = """\
Print every field of an SEV-SNP attestation report (versions 2, 3 and 5), reserved fields included,
with the guest policy, platform info and TCB versions decoded. Nothing is verified: use
'sevbox attest report verify' for that.

example:
  sevbox attest report show guest-report.bin
  sevbox attest report show report.hex --json | jq .measurement
"""

_VERIFY_DESC = """\
Verify an SEV-SNP attestation report and print each check ok/FAILED (or skipped when an earlier
check makes it meaningless). Exit status 0 only if every check holds.

Checks: the AMD chain (the ARK is AMD's, ARK self-signed, ARK -> ASK or ASVK, ASK -> VCEK or
ASVK -> VLEK; RSA-PSS SHA-384), certificate dates, the report's ECDSA P-384 signature over bytes
0x000-0x29F, then (only once the signature holds) the signing key type, the product (CPUID, v3+),
TCB in the certificate == REPORTED_TCB, VCEK hwID == CHIP_ID, no DEBUG and no migration agent
(unless allowed), and the expectations you give. The chain is built in for Milan, Genoa and
Turin, picked from --product, else the certificate's product name, else the report's CPUID.

example:
  sevbox attest report verify report.bin --vcek vcek.der \\
      --measurement 7a1e5c26...cd81841f --report-data 0102030405 --min-tcb bl=3,snp=8,ucode=115
"""

_FETCH_DESC = """\
Fetch from AMD's Key Distribution Service (https://kdsintf.amd.com): a product's CA chain (ASK or
ASVK, then ARK), a chip's VCEK for a TCB, or a product's CRL. What is fetched is checked against
sevbox's built-in AMD roots before it is cached under --cache-dir (default
$XDG_CACHE_HOME/sevbox/kds); a cached copy is used without the network.

examples:
  sevbox attest fetch ca --product milan --out milan-chain.pem
  sevbox attest fetch vcek --report report.bin --product milan --out vcek.der
  sevbox attest fetch vcek --product turin --chip-id 1e550a8ee5cf9f4d --tcb fmc=0,bl=0,tee=0,snp=0,ucode=9
  sevbox attest fetch crl --product genoa --vlek --out genoa-vlek.crl
"""


def _read(path: str, what: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path}: is a directory") from None
    except OSError as err:
        raise UsageError(f"{what} {path}: {err.strerror}") from None


def _hex(text: str, what: str, size: int | None = None, *, max_size: int | None = None) -> bytes:
    compact = "".join(text.split())
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    try:
        value = bytes.fromhex(compact)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not hex") from None
    if size is not None and len(value) != size:
        raise UsageError(f"{what} must be {size} bytes ({2 * size} hex digits), not {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise UsageError(f"{what} must be at most {max_size} bytes, not {len(value)}")
    return value


_TCB_KEYS = {
    "bl": "bootloader",
    "bootloader": "bootloader",
    "tee": "tee",
    "snp": "snp",
    "ucode": "microcode",
    "microcode": "microcode",
    "fmc": "fmc",
}


def parse_tcb_spec(text: str) -> dict[str, int]:
    """``bl=3,tee=0,snp=8,ucode=115[,fmc=1]`` -> {"bootloader": 3, ...}; missing parts are 0."""
    parts: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = item.partition("=")
        name = _TCB_KEYS.get(key.strip().lower())
        if not sep or name is None:
            raise UsageError(f"TCB {text!r}: expected bl=N,tee=N,snp=N,ucode=N[,fmc=N], not {item!r}")
        try:
            number = int(val, 0)
        except ValueError:
            raise UsageError(f"TCB {text!r}: {key} needs a number, not {val!r}") from None
        if not 0 <= number <= 255:
            raise UsageError(f"TCB {text!r}: {key} must be 0-255")
        parts[name] = number
    if not parts:
        raise UsageError("TCB: empty (expected bl=N,tee=N,snp=N,ucode=N[,fmc=N])")
    return parts


def _policy_arg(text: str) -> int:
    from sevbox.sev.policy import SnpPolicy

    try:
        value = int(text, 0)
    except ValueError:
        return SnpPolicy.from_names([n for n in text.split(",") if n.strip()]).encode()
    try:
        SnpPolicy.decode(value)
    except FormatError as err:
        raise UsageError(f"--max-policy: {err.message}") from None
    return value


def _load_report(path: str) -> bytes:
    from sevbox.sev.snp import read_report_bytes

    return read_report_bytes(_read(path, "report"))


# ------------------------------------------------------------------------------------------------
# report show


def _fmt_value(value: Any) -> str:
    from sevbox.sev.snp import TcbVersion

    if isinstance(value, bytes):
        return value.hex() if value else "(none)"
    if isinstance(value, TcbVersion):
        return value.describe()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value} ({value:#x})" if value > 9 else str(value)
    return str(value)


def _show(args: argparse.Namespace) -> int:
    from sevbox.sev.snp import parse_report_unverified
    from sevbox.sev.vcek import canonical_product

    unverified = parse_report_unverified(_load_report(args.report))
    turin = None if args.product is None else canonical_product(args.product) == "Turin"
    report = unverified.decode_unverified(turin=turin)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"SEV-SNP attestation report, version {report.version} (NOT verified: see 'report verify')")
    width = max(len(n) for n, _ in report.fields())
    for name, value in report.fields():
        text = _fmt_value(value)
        if name == "policy":
            text = f"{value:#x}"
        elif name == "platform_info":
            text = f"{value:#x} ({', '.join(report.platform_info_names()) or 'none'})"
        elif name == "signing_key":
            text = f"{value} ({report.signing_key_name})"
        elif name in ("launch_mit_vector", "current_mit_vector") and value is not None:
            text = f"{value:#x}"
        elif name == "cpuid_mod_id" and report.product:
            text += f" ({report.product})"
        elif name == "current_major":
            text += f"  (firmware {report.current_fw})"
        elif name == "committed_major":
            text += f"  (firmware {report.committed_fw})"
        print(f"  {name:<{width}}  {text}")
        if name == "policy":
            for flag, meaning in report.policy_description():
                print(f"  {'':<{width}}    {flag}: {meaning}")
    print(f"  TCB layout: {report.current_tcb.layout} (use --product to choose)")
    return 0


# ------------------------------------------------------------------------------------------------
# report verify


def _verify(args: argparse.Namespace) -> int:
    from sevbox.sev.snp import parse_report_unverified
    from sevbox.sev.vcek import parse_certificate, parse_product_chain
    from sevbox.sev.verify import Expectations, verify_report

    unverified = parse_report_unverified(_load_report(args.report))
    vcek = parse_certificate(_read(args.vcek, "VCEK"), what="VCEK/VLEK certificate")
    chain = None
    if args.chain:
        chain = parse_product_chain(_read(args.chain, "chain"), product=args.product)
    expect = Expectations(
        measurement=_hex(args.measurement, "--measurement", 48) if args.measurement else None,
        report_data=_hex(args.report_data, "--report-data", max_size=64) if args.report_data else None,
        host_data=_hex(args.host_data, "--host-data", 32) if args.host_data else None,
        max_policy=_policy_arg(args.max_policy) if args.max_policy else None,
        min_tcb=parse_tcb_spec(args.min_tcb) if args.min_tcb else None,
        vmpl=args.vmpl,
        allow_debug=args.allow_debug,
        allow_migration_agent=args.allow_migration_agent,
    )
    result = verify_report(
        unverified,
        vcek,
        chain=chain,
        product=args.product,
        expect=expect,
        now=dt.datetime.now(dt.UTC),
        allow_foreign_ark=args.trust_chain_root,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        width = max(len(c.name) for c in result.checks)
        for c in result.checks:
            print(f"{c.status.value:<8}{c.name:<{width}}  {c.detail}")
        if result.ok:
            print(f"verified: all {len(result.checks)} checks hold ({result.product}, {result.kind})")
    if not result.ok:
        failed = result.failed
        first = failed[0].name if failed else "?"
        print(
            f"sevbox: report NOT verified: {len(failed)} of {len(result.checks)} checks failed "
            f"(first: {first})",
            file=sys.stderr,
        )
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# fetch


def _client(args: argparse.Namespace) -> Any:
    from sevbox.host.kds import KdsClient, default_cache_dir
    from sevbox.sev.kds import KDS_BASE

    if not args.url_base.startswith(("http://", "https://")):
        raise UsageError(f"--url-base {args.url_base!r} must start with http:// or https://")
    cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    return KdsClient(
        base_url=args.url_base.rstrip("/") or KDS_BASE,
        cache_dir=cache,
        timeout=args.timeout,
        refresh=args.refresh,
    )


def _emit(args: argparse.Namespace, fetched: Any, extra: dict[str, Any]) -> int:
    import hashlib

    if args.out:
        try:
            Path(args.out).write_bytes(fetched.data)
        except OSError as err:
            raise UsageError(f"--out {args.out}: {err.strerror}") from None
    info = {
        "url": fetched.url,
        "bytes": len(fetched.data),
        "sha256": hashlib.sha256(fetched.data).hexdigest(),
        "cached_file": str(fetched.path) if fetched.path else None,
        "from_cache": fetched.from_cache,
        "out": args.out,
        **extra,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        where = "from the cache" if fetched.from_cache else "fetched"
        print(f"{where}: {fetched.url} ({len(fetched.data)} bytes)")
        for k, v in extra.items():
            print(f"  {k}: {v}")
        if fetched.path:
            print(f"  cached as {fetched.path}")
        if args.out:
            print(f"  written to {args.out}")
    return 0


def _fetch_ca(args: argparse.Namespace) -> int:
    fetched, chain = _client(args).fetch_ca(args.product, vlek=args.vlek)
    mid = chain.intermediate(args.vlek)
    extra = {
        "product": chain.product,
        "ark": chain.ark.subject_cn,
        "intermediate": mid.subject_cn if mid else None,
    }
    return _emit(args, fetched, extra)


def _fetch_vcek(args: argparse.Namespace) -> int:
    from sevbox.sev.snp import TcbVersion, parse_report_unverified
    from sevbox.sev.vcek import canonical_product

    if args.report:
        if args.chip_id or args.tcb:
            raise UsageError("give either --report or --chip-id with --tcb, not both")
        report = parse_report_unverified(_load_report(args.report)).decode_unverified()
        product = args.product or report.product
        if product is None:
            raise UsageError(
                f"a version {report.version} report does not name its product: "
                "add --product milan|genoa|turin"
            )
        prod = canonical_product(product)
        chip_id, tcb = report.chip_id, TcbVersion(report.reported_tcb.raw, prod == "Turin")
    else:
        if not (args.chip_id and args.tcb and args.product):
            raise UsageError("fetch vcek needs --report R, or --product with --chip-id and --tcb")
        prod = canonical_product(args.product)
        chip_id = _hex(args.chip_id, "--chip-id")
        spec = parse_tcb_spec(args.tcb)
        turin = prod == "Turin"
        if "fmc" in spec and not turin:
            raise UsageError("--tcb: fmc exists only on Turin")
        tcb = TcbVersion.from_parts(
            bootloader=spec.get("bootloader", 0),
            tee=spec.get("tee", 0),
            snp=spec.get("snp", 0),
            microcode=spec.get("microcode", 0),
            fmc=spec.get("fmc", 0) if turin else None,
            turin=turin,
        )
    fetched = _client(args).fetch_vcek(prod, chip_id, tcb)
    return _emit(args, fetched, {"product": prod, "tcb": tcb.describe()})


def _fetch_crl(args: argparse.Namespace) -> int:
    fetched = _client(args).fetch_crl(args.product, vlek=args.vlek)
    return _emit(args, fetched, {"product": args.product})


def _fetch_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url-base",
        metavar="URL",
        default="https://kdsintf.amd.com",
        help="KDS base URL: a mirror or test server (default https://kdsintf.amd.com)",
    )
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory (default $XDG_CACHE_HOME/sevbox/kds)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--refresh", action="store_true", help="fetch again even when a cached copy exists")
    p.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="network timeout (default 10)"
    )
    p.add_argument("--out", metavar="FILE", help="also write what was fetched to FILE (as served)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    from sevbox.cli import Parser, _Formatter

    parser.set_defaults(subparser=parser)
    if verb == "report":
        sub = parser.add_subparsers(dest="report_verb", metavar="ACTION", parser_class=Parser)
        show = sub.add_parser(
            "show", help="print every field of a report", description=_SHOW_DESC, formatter_class=_Formatter
        )
        show.add_argument("report", metavar="REPORT", help=_REPORT_HELP)
        show.add_argument(
            "--product",
            type=str.lower,
            choices=_PRODUCTS,
            help="decode TCBs in this product's layout (default: Turin if CPUID family is 1Ah)",
        )
        show.add_argument("--json", action="store_true", help="print the fields as JSON")
        show.set_defaults(handler=_show)

        ver = sub.add_parser(
            "verify",
            help="verify a report against its VCEK/VLEK and AMD's chain",
            description=_VERIFY_DESC,
            formatter_class=_Formatter,
        )
        ver.add_argument("report", metavar="REPORT", help=_REPORT_HELP)
        ver.add_argument("--vcek", required=True, metavar="CERT", help="the VCEK or VLEK (DER or PEM)")
        ver.add_argument(
            "--chain",
            metavar="PEM",
            help="ARK + ASK/ASVK to use instead of the built-in AMD chain (e.g. a KDS cert_chain)",
        )
        ver.add_argument(
            "--product",
            type=str.lower,
            choices=_PRODUCTS,
            help="product line (default: from the certificate, else the report's CPUID)",
        )
        ver.add_argument(
            "--trust-chain-root",
            action="store_true",
            help="accept a --chain whose ARK is not AMD's built-in one (test or private roots only)",
        )
        ver.add_argument("--measurement", metavar="HEX", help="expected MEASUREMENT (48 bytes)")
        ver.add_argument(
            "--report-data", metavar="HEX", help="expected REPORT_DATA (up to 64 bytes; zero-padded)"
        )
        ver.add_argument("--host-data", metavar="HEX", help="expected HOST_DATA (32 bytes)")
        ver.add_argument(
            "--max-policy",
            metavar="POLICY",
            help="most permissive guest policy accepted: a number (0x30000) or names (SMT,ABI_MAJOR=1); "
            "the report may not allow what it does not (SMT, MIGRATE_MA, DEBUG, CXL_ALLOW), must "
            "require what it requires, and its minimum ABI must be at least as high",
        )
        ver.add_argument(
            "--min-tcb",
            metavar="TCB",
            help="minimum REPORTED_TCB, e.g. bl=3,tee=0,snp=8,ucode=115 (Turin: also fmc=N)",
        )
        ver.add_argument("--vmpl", type=int, metavar="N", help="required VMPL of the report (0-3)")
        ver.add_argument("--allow-debug", action="store_true", help="accept a policy that allows debugging")
        ver.add_argument(
            "--allow-migration-agent", action="store_true", help="accept a guest with a migration agent"
        )
        ver.add_argument("--json", action="store_true", help="print the checks as JSON")
        ver.set_defaults(handler=_verify)
        return

    if verb != "fetch":
        raise UsageError(f"sevbox.cli.attest_snp does not handle 'attest {verb}'")
    parser.description = _FETCH_DESC
    parser.formatter_class = _Formatter
    sub = parser.add_subparsers(dest="fetch_verb", metavar="WHAT", parser_class=Parser)
    ca = sub.add_parser(
        "ca",
        help="a product's AMD chain (ASK/ASVK + ARK, PEM)",
        description="Fetch /vcek/v1/PRODUCT/cert_chain (or /vlek/v1/... with --vlek) and check it "
        "against the built-in ARK.\n\n" + _FETCH_DESC,
        formatter_class=_Formatter,
    )
    ca.add_argument("--product", required=True, type=str.lower, choices=_PRODUCTS, help="product line")
    ca.add_argument("--vlek", action="store_true", help="the VLEK chain (ASVK + ARK)")
    _fetch_common(ca)
    ca.set_defaults(handler=_fetch_ca)

    vc = sub.add_parser(
        "vcek",
        help="a chip's VCEK at a TCB (DER)",
        description="Fetch /vcek/v1/PRODUCT/HWID?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=.. (Turin: "
        "fmcSPL first and an 8-byte hwID) and check it is signed by the product's ASK and carries "
        "that hwID and TCB.\n\n" + _FETCH_DESC,
        formatter_class=_Formatter,
    )
    vc.add_argument("--report", metavar="REPORT", help="take CHIP_ID and REPORTED_TCB from this report")
    vc.add_argument("--product", type=str.lower, choices=_PRODUCTS, help="product line")
    vc.add_argument("--chip-id", metavar="HEX", help="CHIP_ID (64 bytes; Turin: 8 are enough)")
    vc.add_argument("--tcb", metavar="TCB", help="bl=N,tee=N,snp=N,ucode=N (Turin: also fmc=N)")
    _fetch_common(vc)
    vc.set_defaults(handler=_fetch_vcek)

    crl = sub.add_parser(
        "crl",
        help="a product's certificate revocation list (DER)",
        description="Fetch /vcek/v1/PRODUCT/crl (or /vlek/v1/... with --vlek) and check the ARK "
        "signed it.\n\n" + _FETCH_DESC,
        formatter_class=_Formatter,
    )
    crl.add_argument("--product", required=True, type=str.lower, choices=_PRODUCTS, help="product line")
    crl.add_argument("--vlek", action="store_true", help="the VLEK CRL")
    _fetch_common(crl)
    crl.set_defaults(handler=_fetch_crl)
