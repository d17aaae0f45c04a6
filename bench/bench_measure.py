"""Launch-digest speed: ours vs sev-snp-measure vs virt-qemu-sev-validate, against the hashing floor.

Inputs (generated, random): a 4 MiB OVMF (random pages + the real AmdSev 4 KiB suffix), a 10 MiB
kernel, a 50 MiB initrd, 8 vCPUs (EPYC-Milan). Prints best-of-N wall times and ratios; never fails on speed.

    .venv/bin/python bench/bench_measure.py [--repeat N]

* SEV-ES: whole command (interpreter start included) for sevbox, sev-snp-measure and
  virt-qemu-sev-validate (Debian's python3; it validates a measurement, so it also does one HMAC),
  and the library call in-process for sevbox and sev-snp-measure. Floor: SHA-256 over the bytes
  (firmware + kernel + initrd), read from the files in 4 MiB chunks.
* SNP: whole command and library call, sevbox vs sev-snp-measure. Floor: SHA-384 of every 4 KiB
  OVMF page plus SHA-256 of kernel and initrd (the hashing the digest cannot avoid).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUFFIX = ROOT / "tests" / "data" / "measure" / "ovmf_AmdSev_suffix.bin"
MIB = 1 << 20


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# Installed packages have byte-code; let the commands cache theirs as an installed sevbox would.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(argv: list[str]) -> Callable[[], None]:
    def go() -> None:
        r = subprocess.run(argv, capture_output=True, text=True, check=False, env=ENV)
        if r.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.strip()}")

    return go


def sha256_file(path: Path, h: hashlib._Hash | None = None) -> bytes:
    h = h or hashlib.sha256()
    buf = bytearray(4 * MIB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    args = ap.parse_args()

    from sevsnpmeasure import guest  # the peer, as a library

    from sevbox.cli.attest_measure import _kernel_hashes
    from sevbox.sev import hashes as H
    from sevbox.sev import measure as M
    from sevbox.sev.ovmf import parse_ovmf
    from sevbox.sev.vmsa import CPU_SIGS, FpuInit, VmsaState

    sig = CPU_SIGS["EPYC-Milan"]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ovmf_p, kernel_p, initrd_p = tmp / "OVMF.fd", tmp / "vmlinuz", tmp / "initrd.img"
        ovmf_p.write_bytes(os.urandom(4 * MIB - 4096) + SUFFIX.read_bytes())
        kernel_p.write_bytes(os.urandom(10 * MIB))
        initrd_p.write_bytes(os.urandom(50 * MIB))
        append = "console=ttyS0 root=/dev/ram0 quiet"
        files = [
            "--ovmf",
            str(ovmf_p),
            "--kernel",
            str(kernel_p),
            "--initrd",
            str(initrd_p),
            "--append",
            append,
        ]
        es = ["--mode", "seves", "--vcpus", "8", "--vcpu-type", "EPYC-Milan", *files]
        snp = ["--mode", "snp", "--vcpus", "8", "--vcpu-type", "EPYC-Milan", *files]
        sevbox = [str(BIN / "sevbox"), "attest", "measure"]
        peer = [str(BIN / "sev-snp-measure")]

        # sanity: everyone agrees before anything is timed
        out_ours = subprocess.run([*sevbox, *es], capture_output=True, text=True, check=True, env=ENV).stdout
        out_peer = subprocess.run([*peer, *es], capture_output=True, text=True, check=True).stdout
        assert out_ours == out_peer, (out_ours, out_peer)
        out_ours = subprocess.run([*sevbox, *snp], capture_output=True, text=True, check=True, env=ENV).stdout
        out_peer = subprocess.run([*peer, *snp], capture_output=True, text=True, check=True).stdout
        assert out_ours == out_peer, (out_ours, out_peer)

        # a measurement for virt-qemu-sev-validate to check (legacy VMSAs: what it builds)
        ovmf = parse_ovmf(ovmf_p.read_bytes())
        kh = _kernel_hashes(str(kernel_p), str(initrd_p), append, ("--kernel", "--initrd"))
        legacy = VmsaState(vcpu_sig=sig, fpu=FpuInit.LEGACY)
        digest = M.sev_launch_digest(
            firmware=ovmf.data,
            hashes_table=H.build_table(kh),
            vmsas=M.sev_measured_vmsas(ovmf=ovmf, vcpus=8, state=legacy),
        )
        tik = bytes(range(16))
        (tmp / "tik").write_bytes(tik)
        info = M.SevLaunchInfo(api_major=1, api_minor=55, build_id=21, policy=0x5)
        blob = M.launch_measurement(tik=tik, info=info, digest=digest, mnonce=bytes(16)) + bytes(16)
        vqsv = ["/usr/bin/python3", "/usr/bin/virt-qemu-sev-validate", "--quiet",
                "--measurement", base64.b64encode(blob).decode(), "--api-major", "1", "--api-minor", "55",
                "--build-id", "21", "--policy", "5", "--firmware", str(ovmf_p), "--kernel", str(kernel_p),
                "--initrd", str(initrd_p), "--cmdline", append, "--num-cpus", "8", "--cpu-family", "25",
                "--cpu-model", "1", "--cpu-stepping", "1",
                "--tik", str(tmp / "tik"), "--tek", str(tmp / "tik")]  # fmt: skip
        ours_validate = [*sevbox[:2], "validate", *vqsv[3:]]
        run(vqsv)()
        run(ours_validate)()

        def lib_ours(mode: str) -> Callable[[], bytes]:
            def go() -> bytes:
                o = parse_ovmf(ovmf_p.read_bytes())
                k = _kernel_hashes(str(kernel_p), str(initrd_p), append, ("--kernel", "--initrd"))
                if mode == "seves":
                    return M.seves_digest(ovmf=o, vcpus=8, vcpu_sig=sig, kernel_hashes=k)
                return M.snp_digest(ovmf=o, vcpus=8, vcpu_sig=sig, kernel_hashes=k)[0]

            return go

        def lib_peer(mode: str) -> Callable[[], bytes]:
            a = (str(ovmf_p), str(kernel_p), str(initrd_p), append)
            if mode == "seves":
                return lambda: guest.seves_calc_launch_digest(8, sig, *a)
            return lambda: guest.snp_calc_launch_digest(8, sig, *a, 0x1, "")

        assert lib_ours("seves")() == lib_peer("seves")() and lib_ours("snp")() == lib_peer("snp")()

        def floor_es() -> None:
            h = hashlib.sha256()
            for p in (ovmf_p, kernel_p, initrd_p):
                sha256_file(p, h)

        def floor_snp() -> None:
            data = memoryview(ovmf_p.read_bytes())
            for off in range(0, len(data), 4096):
                hashlib.sha384(data[off : off + 4096]).digest()
            sha256_file(kernel_p)
            sha256_file(initrd_p)

        def start_only() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=ENV)

        r = args.repeat
        rows: list[tuple[str, str, float, float]] = []
        f_es, f_snp = best(floor_es, r), best(floor_snp, r)
        py = best(start_only, r)
        rows.append(("SEV-ES", "floor: SHA-256 of 64 MiB (files)", f_es, f_es))
        rows.append(("SEV-ES", "sevbox library call", best(lib_ours("seves"), r), f_es))
        rows.append(("SEV-ES", "sev-snp-measure library call", best(lib_peer("seves"), r), f_es))
        rows.append(("SEV-ES", "sevbox attest measure (command)", best(run([*sevbox, *es]), r), f_es))
        rows.append(("SEV-ES", "sev-snp-measure (command)", best(run([*peer, *es]), r), f_es))
        rows.append(("SEV-ES", "sevbox attest validate (command)", best(run(ours_validate), r), f_es))
        rows.append(("SEV-ES", "virt-qemu-sev-validate (command)", best(run(vqsv), r), f_es))
        rows.append(("SNP", "floor: SHA-384/page + SHA-256 k+i", f_snp, f_snp))
        rows.append(("SNP", "sevbox library call", best(lib_ours("snp"), r), f_snp))
        rows.append(("SNP", "sev-snp-measure library call", best(lib_peer("snp"), r), f_snp))
        rows.append(("SNP", "sevbox attest measure (command)", best(run([*sevbox, *snp]), r), f_snp))
        rows.append(("SNP", "sev-snp-measure (command)", best(run([*peer, *snp]), r), f_snp))

    print("commands run with byte-code caching on (PYTHONDONTWRITEBYTECODE unset), as when installed")
    print(f"inputs: 4 MiB OVMF, 10 MiB kernel, 50 MiB initrd, 8 vCPUs; best of {r}; python start {py:.3f} s")
    print(f"{'mode':<7} {'what':<36} {'seconds':>8} {'x floor':>8}")
    for mode, what, t, floor in rows:
        print(f"{mode:<7} {what:<36} {t:8.3f} {t / floor:8.2f}")
    by = {(m, w): t for m, w, t, _ in rows}
    print("ratios (theirs / ours; > 1 means sevbox is faster):")
    pairs = [
        ("SEV-ES", "sev-snp-measure library call", "sevbox library call"),
        ("SEV-ES", "sev-snp-measure (command)", "sevbox attest measure (command)"),
        ("SEV-ES", "virt-qemu-sev-validate (command)", "sevbox attest validate (command)"),
        ("SEV-ES", "virt-qemu-sev-validate (command)", "sevbox attest measure (command)"),
        ("SNP", "sev-snp-measure library call", "sevbox library call"),
        ("SNP", "sev-snp-measure (command)", "sevbox attest measure (command)"),
    ]
    for mode, theirs, ours in pairs:
        print(f"  {mode:<7} {theirs} / {ours}: {by[(mode, theirs)] / by[(mode, ours)]:.2f}")


if __name__ == "__main__":
    main()
