"""How fast the libvirt XML generator/lint and the GHCB codec are. Prints figures; never fails.

    .venv/bin/python bench/bench_libvirt_ghcb.py [--repeat N]

* ``domain_xml`` per SEV mode and ``lint_domain`` on the result (pure, in-process), per call;
* ``schema_check`` (one ``virt-xml-validate`` run, a process) per call;
* the whole ``sevbox libvirt xml`` and ``sevbox libvirt lint`` commands (interpreter start included);
* GHCB MSR values decoded + re-encoded per second; GHCB pages decoded + checked per second.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sevbox.libvirt.domain import DomainSpec, domain_xml  # noqa: E402
from sevbox.libvirt.lint import lint_domain, schema_check  # noqa: E402
from sevbox.sev.ghcb import Ghcb, check_page, decode_msr  # noqa: E402


def best(fn: Callable[[], object], repeat: int, inner: int = 1) -> float:
    """Best time of ``repeat`` runs of ``inner`` calls, per call, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return min(times)


def run(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    r = args.repeat

    print("libvirt (pure):")
    for mode in ("sev", "sev-es", "sev-snp"):
        spec = DomainSpec(
            name="bench",
            memory_mib=2048,
            vcpus=2,
            disk="/srv/b.qcow2",
            launch_security=mode,
            network="default",
        )
        text = domain_xml(spec)
        gen = best(lambda s=spec: domain_xml(s), r, 200)
        lint = best(lambda t=text: lint_domain(t), r, 200)
        size = len(text)
        print(
            f"  {mode:<8} domain_xml {gen * 1e6:8.1f} us   lint_domain {lint * 1e6:8.1f} us   ({size} bytes)"
        )
    text = domain_xml(DomainSpec(name="bench", memory_mib=2048, vcpus=2, disk="/srv/b.qcow2"))
    print(f"  schema_check (virt-xml-validate process): {best(lambda: schema_check(text), r) * 1e3:.1f} ms")

    print("commands (interpreter start included):")
    sevbox = [sys.executable, "-m", "sevbox"]
    xml_argv = [
        *sevbox,
        "libvirt",
        "xml",
        "--name",
        "b",
        "--memory",
        "1024",
        "--vcpus",
        "1",
        "--disk",
        "/x.img",
    ]
    print(f"  sevbox libvirt xml   {best(lambda: run(xml_argv), r) * 1e3:7.1f} ms")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as fh:
        fh.write(text)
        fh.flush()
        for extra in ([], ["--no-schema"]):
            argv = [*sevbox, "libvirt", "lint", fh.name, *extra]
            t = best(lambda a=argv: run(a), r)
            print(f"  sevbox libvirt lint {' '.join(extra):<12}{t * 1e3:7.1f} ms")
    ghcb_argv = [*sevbox, "ghcb", "decode", "0x0002000133000001"]
    print(f"  sevbox ghcb decode   {best(lambda: run(ghcb_argv), r) * 1e3:7.1f} ms")

    print("GHCB codec:")
    rng = random.Random(8)
    values = [
        rng.getrandbits(64) & ~0xFFF
        | rng.choice([1, 2, 4, 5, 6, 7, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x80, 0x81, 0x100])
        for _ in range(10_000)
    ]

    def msr_all() -> None:
        for v in values:
            decode_msr(v).encode()

    per = best(msr_all, r) / len(values)
    print(f"  MSR decode+encode    {1 / per:12,.0f} values/s ({per * 1e6:.2f} us each)")
    page = Ghcb.build(
        valid={"sw_exit_code": 0x72, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rax": 0xD, "rcx": 0}
    )
    raw = page.encode()
    per = best(lambda: check_page(Ghcb.decode(raw)), r, 500)
    print(f"  page decode+check    {1 / per:12,.0f} pages/s ({per * 1e6:.1f} us each)")
    per = best(lambda: Ghcb.decode(raw).encode(), r, 500)
    print(f"  page decode+encode   {1 / per:12,.0f} pages/s ({per * 1e6:.1f} us each)")


if __name__ == "__main__":
    main()
