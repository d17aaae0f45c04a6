"""How long the owner's expected digest takes for what the runtime launches. Prints figures; never fails.

    .venv/bin/python bench/bench_attest_runtime.py [--repeat N]

* library (sevbox.runtime.expected.compute) per mode, with the real guest image (bzImage + initrd)
  and an AmdSev-style firmware (4 MiB of random pages in front of tests/data/measure's AmdSev
  suffix, the size of a real OVMF.fd), 1 and 8 vCPUs, best of N;
* the whole command `sevbox attest expected --bundle B --mode M --json` (interpreter start, image
  lookup, file hashing), best of N.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sevbox.config import Config  # noqa: E402
from sevbox.guest.image import build_image  # noqa: E402
from sevbox.runtime import expected as E  # noqa: E402


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    image = build_image()
    with tempfile.TemporaryDirectory() as tmp:
        fw = Path(tmp) / "OVMF.amdsev.fd"
        suffix = (ROOT / "tests/data/measure/ovmf_AmdSev_suffix.bin").read_bytes()
        fw.write_bytes(random.Random(1).randbytes((4 << 20) - len(suffix)) + suffix)
        sizes = {p.name: p.stat().st_size for p in (fw, image.bzimage, image.initrd)}
        print(f"inputs: {', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sizes.items())}")
        for mode in ("sev", "sev-es", "sev-snp"):
            for vcpus in (1, 8):
                config = Config(ovmf=str(fw), vcpus=vcpus)
                inputs = E.launch_inputs(
                    E.what_if_plan(mode, config),
                    config,
                    firmware=fw,
                    has_hashes_table=True,
                    kernel=image.bzimage,
                    initrd=image.initrd,
                )
                t = best(lambda inputs=inputs: E.compute(inputs), args.repeat)
                print(f"library compute {mode:8s} vcpus={vcpus}: {t * 1000:7.1f} ms")
        bundle = Path(tmp) / "b"
        (bundle / "rootfs").mkdir(parents=True)
        (bundle / "config.json").write_text(
            json.dumps(
                {"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "process": {"args": ["true"], "cwd": "/"}}
            )
        )
        for mode in ("sev", "sev-es", "sev-snp"):
            cmd = [
                sys.executable,
                "-m",
                "sevbox",
                "attest",
                "expected",
                "--bundle",
                str(bundle),
                "--mode",
                mode,
                "--ovmf",
                str(fw),
                "--json",
            ]
            t = best(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True), args.repeat)
            print(f"command attest expected --mode {mode:8s}: {t * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
