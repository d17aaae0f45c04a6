"""SEV owner toolkit: chain verification speed, exhaustive tamper check, session and secret speed.

    .venv/bin/python bench/bench_sev_owner.py [--repeat N] [--no-flips]

Prints figures; never fails on speed. Parts:

* chain: full Naples and Rome chains (PDH|PEK|OCA|CEK|ASK|ARK, as `sevctl export --full`),
  verifications per second (parse + every link), best of N rounds.
* flips: flips one bit in EVERY byte of both full chains (10000 + 11536 positions) and counts the
  tampered chains that still verify (must be 0) and which links caught them. ~30 s.
* session: start_session (P-384 ECDH + KDF + wrap) per second against the Rome PDH.
* secret: LAUNCH_SECRET packet for a 16 KiB table, per second; and `sevbox attest secret`
  whole-command time (interpreter start included) vs virt-qemu-sev-validate's build_secrets
  driven through Debian's python3 (same inputs).
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sevbox.sev import certs as C  # noqa: E402
from sevbox.sev import secret as X  # noqa: E402
from sevbox.sev.session import start_session  # noqa: E402

DATA = ROOT / "tests" / "data" / "sev"


def full(product: str) -> bytes:
    ask, ark = C.builtin_ca(product)
    return (
        b"".join((DATA / product / f"{n}.cert").read_bytes() for n in ("pdh", "pek", "oca", "cek"))
        + ask
        + ark
    )


def verify(blob: bytes) -> C.ChainReport:
    e = C.parse_export(blob)
    return C.verify_chain(e.pdh, e.pek, e.oca, e.cek, ask=e.ask, ark=e.ark)


def rate(fn: Callable[[], object], seconds: float, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-flips", action="store_true")
    args = ap.parse_args()

    for product in ("naples", "rome"):
        blob = full(product)
        assert verify(blob).ok
        print(
            f"chain {product}: {rate(lambda b=blob: verify(b), 1.0, args.repeat):8.0f} full verifications/s"
        )

    if not args.no_flips:
        for product in ("naples", "rome"):
            blob = full(product)
            caught: Counter[str] = Counter()
            missed = 0
            t0 = time.perf_counter()
            for pos in range(len(blob)):
                bad = bytearray(blob)
                bad[pos] ^= 0x01
                report = verify(bytes(bad))
                if report.ok:
                    missed += 1
                caught.update(x.name for x in report.failed)
            dt = time.perf_counter() - t0
            print(
                f"flips {product}: {len(blob)} positions, {missed} still verified, {dt:.1f} s; "
                f"failed links: {dict(caught)}"
            )

    pdh = C.parse_sev_cert((DATA / "rome" / "pdh.cert").read_bytes())
    per_s = rate(lambda: start_session(pdh, 0x33, os.urandom), 1.0, args.repeat)
    print(f"session: {per_s:8.0f} start_session/s")

    tik, tek = (DATA / "secret" / "tik1.bin").read_bytes(), (DATA / "secret" / "tek1.bin").read_bytes()
    value = os.urandom(16000)
    guid = uuid.uuid4()
    blob48 = os.urandom(48)

    def packet() -> None:
        X.build_packet(
            tek=tek, tik=tik, measurement=blob48, iv=os.urandom(16), table=X.build_table([(guid, value)])
        )

    print(f"secret: {rate(packet, 1.0, args.repeat):8.0f} packets/s (16 KiB table)")

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "tik").write_bytes(tik)
        (t / "tek").write_bytes(tek)
        (t / "s").write_bytes(value)
        m64 = base64.b64encode(blob48).decode()
        ours = [str(Path(sys.executable).parent / "sevbox"), "attest", "secret", "--tik", str(t / "tik"),
                "--tek", str(t / "tek"), "--measurement", m64, "--secret", f"{guid}:{t / 's'}",
                "--header", str(t / "h"), "--payload", str(t / "p")]  # fmt: skip
        driver = (
            "import base64,sys\n"
            "from importlib.machinery import SourceFileLoader\n"
            "m=SourceFileLoader('v','/usr/bin/virt-qemu-sev-validate').load_module()\n"
            "vm=m.OfflineConfidentialVM(measurement=sys.argv[1],api_major=0,api_minor=0,build_id=0,policy=0,"
            "secret_header=sys.argv[5],secret_payload=sys.argv[6])\n"
            "vm.load_tik_tek(sys.argv[2],sys.argv[3])\n"
            "vm.secrets_table.load_secret(sys.argv[7],sys.argv[4])\n"
            "r=base64.b64decode(sys.argv[1])[:32]\n"
            "vm.get_measurements=lambda: (r,None)\n"
            "vm.inject_secrets()\n"
        )
        peer = ["/usr/bin/python3", "-W", "ignore", "-c", driver, m64, str(t / "tik"), str(t / "tek"),
                str(t / "s"), str(t / "ph"), str(t / "pp"), str(guid)]  # fmt: skip
        for name, argv in (("sevbox attest secret", ours), ("virt-qemu-sev-validate build_secrets", peer)):
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                best = min(best, time.perf_counter() - t0)
            print(f"whole command, {name}: {best * 1000:7.1f} ms (best of {args.repeat})")


if __name__ == "__main__":
    main()
