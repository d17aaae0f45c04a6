"""Verify an SEV-SNP attestation report: the recipe. One call, a list of named checks.

:func:`verify_report` runs, in this order, each giving ``ok``, ``FAILED`` or ``skipped`` with a detail:

* ``ARK is AMD's``: the root is the ARK built into sevbox for the product (a chain given by the
  caller may bring another root only when ``allow_foreign_ark``);
* ``ARK self-signed``, ``ARK -> ASK`` (``ARK -> ASVK``), ``ASK -> VCEK`` (``ASVK -> VLEK``): the chain,
  RSASSA-PSS SHA-384, from the chain given or the one built in for the product;
* ``certificate dates`` (only when ``now`` is given: pure code has no clock);
* ``report signature``: ECDSA P-384/SHA-384 over bytes 0x000-0x29F with the VCEK/VLEK key;

and only when the signature holds (nothing decides on a report field before that):

* ``signing key``: the report's SIGNING_KEY says VCEK or VLEK as the certificate is;
* ``product``: the report's CPUID family/model (v3+) name the chain's product;
* ``TCB``: the SPLs in the certificate equal REPORTED_TCB (Milan/Genoa or Turin layout);
* ``hwID``: the VCEK's hwID equals CHIP_ID (64 bytes; Turin: the first 8); not for a VLEK;
* the owner's expectations: ``debug`` (DEBUG clear unless allowed), ``migration agent`` (MIGRATE_MA
  clear and REPORT_ID_MA all ones, unless allowed), and when asked: ``measurement``, ``report data``,
  ``host data``, ``policy`` (no more permissive than a maximum), ``minimum TCB``, ``VMPL``.

The product comes from ``product=``, else the certificate's productName, else (v3+) the report's
CPUID; the choice picks among AMD's own roots, and the ``product`` check confirms it once the
report is authentic.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
from dataclasses import dataclass, field
from typing import Any

from sevbox.errors import FormatError, VerificationError
from sevbox.sev.policy import SnpPolicy
from sevbox.sev.snp import AttestationReport, TcbVersion, UnverifiedReport, parse_report_unverified
from sevbox.sev.vcek import (
    TURIN_HWID_SIZE,
    Certificate,
    EndorsementExtensions,
    ProductChain,
    builtin_chain,
    canonical_product,
    endorsement_extensions,
    endorsement_public_key,
    verify_link,
)

__all__ = ["Check", "Expectations", "Status", "VerifyResult", "policy_within", "verify_report"]

_DEBUG_BIT = 1 << 19
_MIGRATE_MA_BIT = 1 << 18
# Policy bits that allow something (a report setting one the maximum lacks is too permissive) and
# bits that require something (a maximum setting one the report lacks is too permissive).
_PERMISSIVE = {"SMT": 16, "MIGRATE_MA": 18, "DEBUG": 19, "CXL_ALLOW": 21}
_RESTRICTIVE = {
    "SINGLE_SOCKET": 20,
    "MEM_AES_256_XTS": 22,
    "RAPL_DIS": 23,
    "CIPHERTEXT_HIDING": 24,
    "PAGE_SWAP_DISABLE": 25,
}


class Status(enum.Enum):
    OK = "ok"
    FAILED = "FAILED"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status.value, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Expectations:
    """What the owner requires beyond authenticity. None means "not checked"."""

    measurement: bytes | None = None
    report_data: bytes | None = None
    host_data: bytes | None = None
    max_policy: int | None = None
    min_tcb: TcbVersion | dict[str, int] | None = None
    vmpl: int | None = None
    allow_debug: bool = False
    allow_migration_agent: bool = False


@dataclass(frozen=True)
class VerifyResult:
    checks: tuple[Check, ...]
    product: str | None
    kind: str | None
    report: AttestationReport | None = field(repr=False)  # decoded only when the signature held

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAILED]

    def raise_for_failure(self) -> None:
        """Raise VerificationError(check=<first failed check>) unless every check held."""
        if not self.ok:
            first = self.failed[0] if self.failed else self.checks[0]
            raise VerificationError(f"{first.name}: {first.detail}", check=first.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "product": self.product,
            "signing_key": self.kind,
            "checks": [c.to_json() for c in self.checks],
            "report": self.report.to_json() if self.report is not None else None,
        }


def policy_within(policy: int, maximum: int) -> list[str]:
    """Ways ``policy`` is more permissive than ``maximum``; empty when it is not.

    Allowing bits (SMT, MIGRATE_MA, DEBUG, CXL_ALLOW) the report sets must be set in the maximum;
    requiring bits (SINGLE_SOCKET, MEM_AES_256_XTS, RAPL_DIS, CIPHERTEXT_HIDING, PAGE_SWAP_DISABLE)
    the maximum sets must be set in the report; the report's minimum ABI version must be at least
    the maximum's.
    """
    out = [f"{n} allowed" for n, bit in _PERMISSIVE.items() if policy >> bit & 1 and not maximum >> bit & 1]
    out += [
        f"{n} not required" for n, bit in _RESTRICTIVE.items() if maximum >> bit & 1 and not policy >> bit & 1
    ]
    abi, max_abi = (policy >> 8 & 0xFF, policy & 0xFF), (maximum >> 8 & 0xFF, maximum & 0xFF)
    if abi < max_abi:
        out.append(f"minimum ABI {abi[0]}.{abi[1]} < {max_abi[0]}.{max_abi[1]}")
    return out


def _eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _min_tcb(expected: TcbVersion | dict[str, int], turin: bool) -> TcbVersion:
    if isinstance(expected, TcbVersion):
        if expected.turin != turin:
            return TcbVersion(expected.raw, turin)
        return expected
    parts = dict(expected)
    if not turin:
        parts.pop("fmc", None)
    return TcbVersion.from_parts(
        bootloader=parts.get("bootloader", 0),
        tee=parts.get("tee", 0),
        snp=parts.get("snp", 0),
        microcode=parts.get("microcode", 0),
        fmc=parts.get("fmc") if turin else None,
        turin=turin,
    )


def _choose_product(
    product: str | None, ext: EndorsementExtensions | None, unverified: UnverifiedReport
) -> tuple[str, str]:
    if product:
        return canonical_product(product), "given"
    if ext is not None:
        try:
            return ext.product, f"certificate productName {ext.product_name!r}"
        except FormatError:
            pass
    guess = unverified.decode_unverified().product  # a choice among AMD roots; confirmed later
    if guess:
        return guess, "report CPUID (confirmed after the signature check)"
    raise FormatError("cannot tell the product (Milan, Genoa, Turin): give it (--product)", what="product")


def verify_report(
    report: bytes | UnverifiedReport,
    vcek: Certificate,
    *,
    chain: ProductChain | None = None,
    product: str | None = None,
    expect: Expectations | None = None,
    now: dt.datetime | None = None,
    allow_foreign_ark: bool = False,
) -> VerifyResult:
    """Check ``report`` against ``vcek`` (a VCEK or VLEK) and its AMD chain; see the module doc.

    Malformed input (report length/version, certificate without the AMD extensions) raises
    FormatError; everything else is a check in the result. ``chain`` overrides the built-in chain;
    its ARK must still be AMD's (the one built in for the product) unless ``allow_foreign_ark``.
    """
    expect = expect or Expectations()
    unverified = report if isinstance(report, UnverifiedReport) else parse_report_unverified(report)
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, Status.OK if ok else Status.FAILED, detail))

    ext = endorsement_extensions(vcek)
    kind = ext.kind
    vlek = kind == "VLEK"
    if chain is not None and product is None:
        product = chain.product
    prod, source = _choose_product(product, ext, unverified)
    if chain is None:
        chain = builtin_chain(prod)
    mid_name = "ASVK" if vlek else "ASK"
    mid = chain.intermediate(vlek)

    # 1. The chain, rooted in AMD's ARK.
    amd_ark = builtin_chain(prod).ark
    if chain.ark.der == amd_ark.der:
        add("ARK is AMD's", True, f"the built-in AMD {prod} ARK (sha256 {amd_ark.fingerprint[:16]}…)")
    else:
        add(
            "ARK is AMD's",
            allow_foreign_ark,
            f"{chain.ark.subject_cn} (sha256 {chain.ark.fingerprint[:16]}…) is not the built-in "
            f"AMD {prod} ARK" + (": accepted as asked" if allow_foreign_ark else ""),
        )
    try:
        verify_link(chain.ark, chain.ark, check="ARK self-signed")
        add("ARK self-signed", True, f"{chain.ark.subject_cn} (sha256 {chain.ark.fingerprint[:16]}…)")
    except VerificationError as err:
        add("ARK self-signed", False, err.message)
    if mid is None:
        add(f"ARK -> {mid_name}", False, f"the {prod} chain given has no {mid_name}")
        add(f"{mid_name} -> {kind}", False, f"no {mid_name} to check the {kind} with")
    else:
        try:
            verify_link(mid, chain.ark, check=f"ARK -> {mid_name}")
            add(f"ARK -> {mid_name}", True, f"{chain.ark.subject_cn} signed {mid.subject_cn}")
        except VerificationError as err:
            add(f"ARK -> {mid_name}", False, err.message)
        try:
            verify_link(vcek, mid, check=f"{mid_name} -> {kind}")
            add(
                f"{mid_name} -> {kind}",
                True,
                f"{mid.subject_cn} signed {vcek.subject_cn} ({ext.product_name})",
            )
        except VerificationError as err:
            add(f"{mid_name} -> {kind}", False, err.message)
    if now is not None:
        stale = [
            c.subject_cn
            for c in (chain.ark, mid, vcek)
            if c is not None and not c.not_before <= now <= c.not_after
        ]
        add(
            "certificate dates",
            not stale,
            f"outside their validity: {', '.join(stale)}" if stale else f"all valid at {now:%Y-%m-%d}",
        )

    # 2. The signature: before it holds, no field of the report is trusted.
    turin = prod == "Turin"
    verified: AttestationReport | None = None
    try:
        verified = unverified.verify(endorsement_public_key(vcek), turin=turin)
        add("report signature", True, f"ECDSA P-384/SHA-384 by the {kind} over bytes 0x000-0x29F")
    except (VerificationError, FormatError) as err:
        add("report signature", False, err.message)

    names = ["signing key", "product", "TCB", "hwID", "debug", "migration agent"]
    names += [
        n
        for n, v in (
            ("measurement", expect.measurement),
            ("report data", expect.report_data),
            ("host data", expect.host_data),
            ("policy", expect.max_policy),
            ("minimum TCB", expect.min_tcb),
            ("VMPL", expect.vmpl),
        )
        if v is not None
    ]
    if verified is None:
        for n in names:
            checks.append(Check(n, Status.SKIPPED, "not checked: the report signature did not verify"))
        return VerifyResult(tuple(checks), prod, kind, None)
    r = verified

    if r.signature_algo != 1:
        add("signing key", False, f"SIGNATURE_ALGO is {r.signature_algo}, not 1 (ECDSA P-384 SHA-384)")
    else:
        add(
            "signing key",
            r.signing_key_name == kind,
            f"report says {r.signing_key_name}, certificate is a {kind}",
        )
    if r.version >= 3:
        add(
            "product",
            r.product == prod,
            f"CPUID family {r.cpuid_fam_id:#x} model {r.cpuid_mod_id:#x} stepping {r.cpuid_step} is "
            f"{r.product or 'unknown'}; chain is {prod} ({source})",
        )
    else:
        add("product", True, f"{prod} from the {source} (a v2 report has no CPUID fields)")
    cert_tcb = ext.tcb(turin=turin)
    add(
        "TCB",
        cert_tcb.raw == r.reported_tcb.raw,
        f"{kind} {cert_tcb.describe()}; REPORTED_TCB {r.reported_tcb.describe()}",
    )
    if vlek:
        add("hwID", True, "not applicable: a VLEK is not bound to a chip")
    else:
        hwid = ext.hwid or b""
        want = r.chip_id[:TURIN_HWID_SIZE] if len(hwid) == TURIN_HWID_SIZE else r.chip_id
        if r.mask_chip_key or not any(r.chip_id):
            add("hwID", False, "CHIP_ID is masked (zero) in the report: cannot bind it to the VCEK")
        else:
            same = _eq(hwid, want)
            relation = "==" if same else "!="
            add("hwID", same, f"VCEK hwID {hwid.hex()[:16]}… {relation} CHIP_ID {want.hex()[:16]}…")
    debug = bool(r.policy & _DEBUG_BIT)
    add(
        "debug",
        not debug or expect.allow_debug,
        f"policy {r.policy:#x}: DEBUG {'set' if debug else 'clear'}"
        + (" (allowed)" if debug and expect.allow_debug else ""),
    )
    ma = bool(r.policy & _MIGRATE_MA_BIT)
    bound = r.report_id_ma != b"\xff" * 32
    add(
        "migration agent",
        not (ma or bound) or expect.allow_migration_agent,
        f"MIGRATE_MA {'set' if ma else 'clear'}; REPORT_ID_MA "
        + (f"{r.report_id_ma.hex()[:16]}… (bound)" if bound else "all ones (none bound)"),
    )
    for name, want_bytes, have in (
        ("measurement", expect.measurement, r.measurement),
        ("report data", expect.report_data, r.report_data),
        ("host data", expect.host_data, r.host_data),
    ):
        if want_bytes is None:
            continue
        padded = want_bytes.ljust(len(have), b"\0") if name == "report data" else want_bytes
        ok = len(padded) == len(have) and _eq(padded, have)
        add(name, ok, f"reported {have.hex()}" + ("" if ok else f", expected {want_bytes.hex()}"))
    if expect.max_policy is not None:
        why = policy_within(r.policy, expect.max_policy)
        try:
            names_set = ",".join(SnpPolicy.decode(r.policy).names()) or "none"
        except FormatError:
            names_set = "invalid"
        add(
            "policy",
            not why,
            f"policy {r.policy:#x} ({names_set}) vs maximum {expect.max_policy:#x}"
            + (f": {'; '.join(why)}" if why else ""),
        )
    if expect.min_tcb is not None:
        floor = _min_tcb(expect.min_tcb, turin)
        low = r.reported_tcb.meets(floor)
        add(
            "minimum TCB",
            not low,
            f"REPORTED_TCB {r.reported_tcb.describe()}"
            + (f": {', '.join(low)}" if low else " meets the minimum"),
        )
    if expect.vmpl is not None:
        add("VMPL", r.vmpl == expect.vmpl, f"report VMPL {r.vmpl}, expected {expect.vmpl}")
    return VerifyResult(tuple(checks), prod, kind, r)
