"""sevbox under a real containerd 1.6 (its runc shim, driven with ctr), beside runc as the floor.

Prints medians (the two runtimes interleaved) of:
  (a) `ctr run --rm IMG ID true` wall time: a whole container life through containerd (a VM boot
      under TCG here, for sevbox);
  (b) `ctr task exec ID true` into a running task: containerd -> shim -> `sevbox exec` -> guest.
Usage: .venv/bin/python bench/bench_containerd.py [--repeat N]   (as root; boots real guests)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers.test_containerd import IMAGE, Containerd, private_containerd

RUNTIMES = ("sevbox", "runc")


def timed(c: Containerd, *args: str) -> float:
    t0 = time.perf_counter()
    r = c.ctr(*args)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"ctr {' '.join(args)} -> {r.returncode}: {r.stderr.strip()}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="samples per figure and runtime (default 5)")
    n = ap.parse_args().repeat
    runs: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    execs: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    with private_containerd() as c:
        for i in range(n):
            for rt in RUNTIMES:
                runs[rt].append(timed(c, "run", "--rm", *c.runtime_flags(rt), IMAGE, f"b{i}-{rt}", "true"))
        for rt in RUNTIMES:
            cid = f"bx-{rt}"
            timed(
                c,
                "run",
                "-d",
                *c.runtime_flags(rt),
                IMAGE,
                cid,
                "sh",
                "-c",
                "trap 'exit 0' TERM; sleep 1000 & wait",
            )
            for i in range(n):
                execs[rt].append(timed(c, "tasks", "exec", "--exec-id", f"x{i}", cid, "true"))
            c.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            time.sleep(1)
            c.ctr("tasks", "delete", "--force", cid)
            c.ctr("containers", "delete", cid)
    print(f"containerd 1.6 + runc shim, {n} samples each, medians (min-max)")
    for title, table in (("(a) ctr run --rm true", runs), ("(b) ctr task exec true", execs)):
        for rt in RUNTIMES:
            xs = [x * 1000 for x in table[rt]]
            print(f"{title:24} {rt:7} {statistics.median(xs):8.0f} ms  ({min(xs):.0f}-{max(xs):.0f})")


if __name__ == "__main__":
    main()
