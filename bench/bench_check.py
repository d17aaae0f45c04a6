"""How long `sevbox check` and `sevbox guest-check` take, piece by piece. Prints figures; never fails.

    .venv/bin/python bench/bench_check.py [--repeat N]

* each probe of the live check on this host (CPU, kernel log, /dev/kvm, QEMU's three answers,
  query-sev-capabilities over QMP, the OVMF scan, libvirt), best of N;
* the whole library call live, live with quick=True (no QEMU/libvirt programs), and on a captured
  tree (tests/data/check/snp, no programs run);
* the whole command (interpreter start included): `sevbox check --json`, `--quick`, `--sysroot`,
  `guest-check --json`;
* SEV_STATUS decodes per second (the pure part of guest-check).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sevbox.host import guestcheck, kmsg, probe  # noqa: E402
from sevbox.host.msr import decode_sev_status  # noqa: E402


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def tree_copy() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-check-")) / "snp"
    shutil.copytree(ROOT / "tests/data/check/snp", root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    n = ap.parse_args().repeat
    slash = Path("/")
    qemu = shutil.which(probe.QEMU) or probe.QEMU
    virsh = shutil.which("virsh")
    print(f"bench_check: best of {n}, this host ({sys.platform}), QEMU {qemu}")
    print("\nlive probes (library, in-process):")
    rows: list[tuple[str, Callable[[], object]]] = [
        ("CPU: /proc/cpuinfo + /dev/cpu/0/cpuid", lambda: probe._cpu_facts(slash)),
        ("kernel log (/dev/kmsg)", lambda: kmsg.kernel_log(slash)),
        ("/dev/kvm open + KVM_GET_API_VERSION", lambda: probe._dev_kvm(slash, True)),
        ("qemu --version", lambda: probe._run([qemu, "--version"])),
        ("qemu -object help", lambda: probe._run([qemu, "-object", "help"])),
        ("qemu -object sev-guest,help", lambda: probe._run([qemu, "-object", "sev-guest,help"])),
        ("query-sev-capabilities (QEMU start + QMP)", lambda: probe._live_caps(qemu)),
        ("OVMF scan + parse (/usr/share/...)", lambda: probe._firmware_facts(slash)),
    ]
    if virsh:
        rows.append(("virsh domcapabilities", lambda: probe._libvirt_facts(slash, True, True)))
    for name, fn in rows:
        print(f"  {name:<44}{best(fn, n) * 1000:9.1f} ms")
    root = tree_copy()
    print("\nwhole check (library):")
    for name, fn in [
        ("probe() live", lambda: probe.probe(slash)),
        (
            "probe() live, quick (no QEMU/libvirt runs)",
            lambda: probe.probe(slash, run_qemu=False, run_libvirt=False),
        ),
        ("probe() on the captured snp tree", lambda: probe.probe(root)),
        ("guest_check() live", guestcheck.guest_check),
    ]:
        print(f"  {name:<44}{best(fn, n) * 1000:9.1f} ms")
    exe = [sys.executable, "-m", "sevbox"]
    print("\nwhole command (interpreter start included):")
    for name, argv in [
        ("sevbox check --json", ["check", "--json"]),
        ("sevbox check --quick", ["check", "--quick"]),
        ("sevbox check --json --sysroot <snp tree>", ["check", "--json", "--sysroot", str(root)]),
        ("sevbox guest-check --json", ["guest-check", "--json"]),
    ]:
        t = best(lambda a=argv: subprocess.run([*exe, *a], capture_output=True, check=False), n)  # type: ignore[misc]
        print(f"  {name:<44}{t * 1000:9.1f} ms")
    shutil.rmtree(root.parent)
    count = 200_000
    t = time.perf_counter()
    for v in range(count):
        decode_sev_status(v).mode  # noqa: B018
    el = time.perf_counter() - t
    print(f"\nSEV_STATUS decode + mode: {count / el:,.0f} per second ({el / count * 1e6:.2f} us each)")


if __name__ == "__main__":
    main()
