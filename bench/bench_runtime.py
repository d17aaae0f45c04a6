"""Runtime verbs: how long containerd's frequent calls take, on a real guest (TCG here).

Prints (medians, interleaved where compared):
  (a) `sevbox state` wall time, including interpreter start, beside `python -c pass` (the floor);
  (b) `sevbox exec ID true` round trip, beside the guest's own fork+exec of `true` (measured inside
      the guest: one exec running 200 `true`s minus one running none, per process);
  (c) `create`+`start`+wait vs foreground `run` of the same `true` container (the CLI layer's cost).
Usage: .venv/bin/python bench/bench_runtime.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEVBOX = [sys.executable, "-m", "sevbox"]


def bundle(where: Path, args: list[str]) -> Path:
    root = where / "rootfs" / "bin"
    root.mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "busybox")
    for a in ("sh", "true", "sleep"):
        (root / a).symlink_to("busybox")
    cfg = {"ociVersion": "1.2.0", "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"]},
           "root": {"path": "rootfs"}}  # fmt: skip
    (where / "config.json").write_text(json.dumps(cfg))
    return where


def timed(argv: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
    subprocess.run(argv, check=True, **quiet, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    n = ap.parse_args().repeat
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        root = str(t / "state")
        g = [*SEVBOX, "--root", root]
        b = bundle(t / "b1", ["sleep", "1000"])
        subprocess.run([*g, "run", "--detach", "--bundle", str(b), "c1"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            floor, state = [], []
            for _ in range(n):
                floor.append(timed([sys.executable, "-c", "pass"]))
                state.append(timed([*g, "state", "c1"]))
            print(f"(a) sevbox state: median {statistics.median(state) * 1000:.1f} ms "
                  f"(python -c pass: {statistics.median(floor) * 1000:.1f} ms)")  # fmt: skip
            ex = [timed([*g, "exec", "c1", "true"]) for _ in range(max(5, n // 2))]
            loop = "i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done"
            empty = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); done"
            full = statistics.median(timed([*g, "exec", "c1", "sh", "-c", loop]) for _ in range(3))
            base = statistics.median(timed([*g, "exec", "c1", "sh", "-c", empty]) for _ in range(3))
            per = max(full - base, 0.0) / 200
            med = statistics.median(ex)
            print(f"(b) sevbox exec c1 true: median {med * 1000:.0f} ms; guest fork+exec of true: "
                  f"{per * 1000:.1f} ms; exec overhead above it {(med - per) * 1000:.0f} ms")  # fmt: skip
        finally:
            subprocess.run([*g, "delete", "--force", "c1"], check=False)
        bt = bundle(t / "b2", ["true"])
        cs, rn = [], []
        for i in range(max(3, n // 7)):
            t0 = time.perf_counter()
            create = [*g, "create", "--bundle", str(bt), "--pid-file", str(t / "p"), f"x{i}"]
            subprocess.run(create, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            pid = int((t / "p").read_bytes())
            subprocess.run([*g, "start", f"x{i}"], check=True)
            while True:  # the monitor is a grandchild reparented to init here: poll for it
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                if (
                    Path(f"/proc/{pid}/stat").exists()
                    and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
                ):
                    break
                time.sleep(0.005)
            cs.append(time.perf_counter() - t0)
            subprocess.run([*g, "delete", "--force", f"x{i}"], check=False)
            rn.append(timed([*g, "run", "--bundle", str(bt), f"r{i}"]))
        c, r = statistics.median(cs), statistics.median(rn)
        extra = 100 * (c / r - 1)
        print(f"(c) create+start+exit {c:.2f} s vs run {r:.2f} s: the runc CLI layer adds {extra:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
