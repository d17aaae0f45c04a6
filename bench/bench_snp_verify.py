"""SNP report verifications per second, one core, with the chain cached. Prints figures; never fails.

    .venv/bin/python bench/bench_snp_verify.py [--seconds S] [--cpu N]

Input: the real Milan report and VCEK from tests/data/snp (virtee/sev vectors) and sevbox's built-in
AMD Milan chain. Figures:

* full recipe, chain cached: ``verify_report(...)`` each time on the same report bytes with
  expectations set (measurement, TCB floor, policy); the three RSA-PSS chain links are cached by DER,
  so each call parses the report, reads the VCEK extensions, verifies the ECDSA P-384 signature and
  runs the field checks;
* the ECDSA P-384 verification alone (the floor: what cannot be cached);
* the chain uncached: the three RSA-4096 PSS verifications (ARK self-signature, ARK -> ASK,
  ASK -> VCEK) plus certificate parsing, for reference;
* cold start: ``sevbox attest report verify`` as a whole command (interpreter start included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "snp"
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from sevbox.sev import vcek as vcek_mod  # noqa: E402
from sevbox.sev.snp import parse_report_unverified  # noqa: E402
from sevbox.sev.vcek import builtin_chain, endorsement_public_key, parse_certificate  # noqa: E402
from sevbox.sev.verify import Expectations, verify_report  # noqa: E402

MEASUREMENT = bytes.fromhex(
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
)


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    fn()  # warm
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}")

    report = bytes.fromhex((DATA / "virtee_milan_report.hex").read_text().strip())
    vcek_der = (DATA / "virtee_milan_vcek.der").read_bytes()
    vcek = parse_certificate(vcek_der)
    expect = Expectations(
        measurement=MEASUREMENT, min_tcb={"bootloader": 3, "snp": 8, "microcode": 115}, max_policy=0x30000
    )
    result = verify_report(report, vcek, expect=expect)
    assert result.ok, result.failed

    full, n_full = rate(lambda: verify_report(report, vcek, expect=expect), args.seconds)
    key = endorsement_public_key(vcek)
    unverified = parse_report_unverified(report)
    der = unverified.signature_der()
    signed = unverified.signed_bytes

    def ecdsa_only() -> None:
        key.verify(der, signed, ec.ECDSA(hashes.SHA384()))

    floor, n_floor = rate(ecdsa_only, args.seconds)
    chain = builtin_chain("Milan")
    assert chain.ask is not None

    def chain_uncached() -> None:
        vcek_mod._link_cached.cache_clear()
        ark = parse_certificate(chain.ark.der)
        ask = parse_certificate(chain.ask.der)  # type: ignore[union-attr]
        leaf = parse_certificate(vcek_der)
        vcek_mod.verify_link(ark, ark)
        vcek_mod.verify_link(ask, ark)
        vcek_mod.verify_link(leaf, ask)

    uncached, n_unc = rate(chain_uncached, min(args.seconds, 2.0))

    cmd = [str(ROOT / ".venv/bin/sevbox"), "attest", "report", "verify"]
    cmd += [str(DATA / "virtee_milan_report.hex"), "--vcek", str(DATA / "virtee_milan_vcek.der")]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)

    print(f"verify_report, chain cached     {full:8.0f} /s  ({1e6 / full:7.0f} us each, n={n_full})")
    print("  (target >= 500/s)")
    print(f"ECDSA P-384 verify alone        {floor:8.0f} /s  ({1e6 / floor:7.0f} us each, n={n_floor})")
    print(f"recipe / ECDSA floor            {floor / full:8.2f} x")
    print(f"chain uncached (3x RSA-4096)    {uncached:8.0f} /s  ({1e6 / uncached:7.0f} us each, n={n_unc})")
    print(f"whole command, best of 5        {best * 1000:8.0f} ms  (sevbox attest report verify)")


if __name__ == "__main__":
    main()
