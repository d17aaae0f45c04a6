"""Sandbox benchmarks (issue 3), printed, never asserted. Run: ``.venv/bin/python bench/bench_sandbox.py``

(a) start-up: ``sevbox run`` of busybox ``true`` split into QEMU start, kernel to init, agent ready,
    container started, exit seen; beside the FLOOR measured in the same run (interleaved): the same
    QEMU argv and kernel booting a busybox-shell /init that loads the same modules, answers on the
    same virtio-serial channel and powers off. Also the CLI's own wall time.
(b) host memory (PSS) of QEMU + the monitor (the ``sevbox run`` process) for a 256 MiB guest once
    the container runs; beside a bare QEMU running the floor guest.
(c) stdout throughput: 256 MiB out of the container through the agent, beside the raw channel
    (the floor guest dd-ing straight into the port).
(d) initramfs compression: agent-ready time with an lz4 vs an uncompressed initramfs (interleaved).

Options: ``--runs N`` (default 5), ``--mib N`` for (c) (default 256), ``--skip a,b,c,d``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sevbox.guest import image as im
from sevbox.qemu.argv import VmSpec, kernel_cmdline
from sevbox.qemu.machine import Machine
from sevbox.runtime.bundle import Process, load_bundle
from sevbox.sandbox import Exited, Output, Sandbox, host_tsc_khz

BUSYBOX = "/bin/busybox"

FLOOR_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox sed -n 's/^mmio //p' /etc/modules); do /bin/busybox insmod /lib/modules/$m.ko; done
for p in /sys/class/virtio-ports/*; do
  [ "$(/bin/busybox cat $p/name)" = sevbox.0 ] && port=/dev/${p##*/}
done
while [ ! -e "$port" ]; do :; done
if /bin/busybox grep -q floor.dd= /proc/cmdline; then
  n=$(/bin/busybox sed 's/.*floor.dd=\\([0-9]*\\).*/\\1/' /proc/cmdline)
  /bin/busybox dd if=/dev/zero of=$port bs=65536 count=$n 2>/dev/null
else
  echo ready > $port
fi
/bin/busybox sleep ${FLOOR_HOLD:-0}
/bin/busybox reboot -f
"""


def floor_initrd(out: Path, hold: int = 0) -> Path:
    """A busybox-shell initramfs with the same kernel modules as the agent's image."""
    _, mdir, _ = im._find_kernel(im.kernel_dir())
    mods = im._index_modules(mdir)
    order = im.module_load_order(im.MODULE_SETS["mmio"], lambda n: im.modinfo_depends(mods[n].read_bytes()))
    entries = [
        im.CpioEntry("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()),
        im.CpioEntry("init", 0o100755, FLOOR_INIT.replace("${FLOOR_HOLD:-0}", str(hold)).encode()),
        im.CpioEntry("etc/modules", 0o100644, f"mmio {' '.join(order)}\n".encode()),
    ]
    entries += [im.CpioEntry(f"lib/modules/{m}.ko", 0o100644, mods[m].read_bytes()) for m in order]
    entries += [im.CpioEntry(d, 0o040755) for d in ("proc", "sys", "dev")]
    out.write_bytes(im._compress(im.newc_archive(entries), "lz4"))
    return out


def floor_boot(image: im.GuestImage, initrd: Path, extra: str = "", mib: int = 0) -> dict[str, float]:
    spec = VmSpec(kernel=image.vmlinux, initrd=initrd, accel="tcg")
    spec = replace(spec, cmdline=kernel_cmdline(spec, tsc_khz=host_tsc_khz(), extra=extra))
    t0 = time.monotonic()
    m = Machine(spec, name="floor")
    chan = m.launch()
    t_launched = time.monotonic()
    got = 0
    first = None
    try:
        chan.settimeout(120)
        while True:
            data = chan.recv(1 << 20)
            if not data:
                break
            if first is None:
                first = time.monotonic()
            got += len(data)
            if not mib and b"\n" in data:
                break
        end = time.monotonic()
        m.wait(30)
    finally:
        chan.close()
        m.close()
    assert first is not None, "the floor guest never answered"
    return {
        "qemu_start": t_launched - t0,
        "first_byte": first - t0,
        "bytes": got,
        "stream_s": end - first,
        "exit": time.monotonic() - t0,
    }


def make_bundle(root: Path, args: list[str]) -> Path:
    (root / "rootfs" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "rootfs" / "bin" / "busybox")
    for a in ("sh", "true", "dd", "sleep", "echo", "cat"):
        dst = root / "rootfs" / "bin" / a
        if not dst.exists():
            os.symlink("busybox", dst)
    for d in ("proc", "dev", "tmp"):
        (root / "rootfs" / d).mkdir(exist_ok=True)
    cfg = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    }
    (root / "config.json").write_text(json.dumps(cfg))
    return root


def sandbox_true(bundle: Path, **launch: object) -> dict[str, float]:
    b = load_bundle(bundle)
    t0 = time.monotonic()
    with Sandbox.launch(rootfs=b.rootfs, name="bench", accel="tcg", **launch) as sb:  # type: ignore[arg-type]
        t_ready = time.monotonic()
        sb.create_container(b)
        sb.start_container()
        t_started = time.monotonic()
        status = None
        while status is None:
            select.select([sb.fileno()], [], [], 1)
            for ev in sb.events():
                if isinstance(ev, Exited) and ev.exec_id == "":
                    status = ev.status
        t_exit = time.monotonic()
        timings = dict(sb.boot_timings)
        sb.shutdown()
    t_down = time.monotonic()
    timings.update(
        {
            "ready": t_ready - t0,
            "container_started": t_started - t_ready,
            "exit_seen": t_exit - t_started,
            "total_to_exit": t_exit - t0,
            "shutdown": t_down - t_exit,
        }
    )
    return timings


def cli_true(bundle: Path, state: Path) -> float:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "sevbox", "--root", str(state), "run", "-b", str(bundle), "bench"],
        capture_output=True,
        check=False,
        env={**os.environ, "SEVBOX_ACCEL": "tcg"},
    )
    if r.returncode != 0:
        raise SystemExit(f"sevbox run failed: {r.stderr.decode()}")
    return time.monotonic() - t0


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.3f}s"


def bench_a(image: im.GuestImage, work: Path, runs: int) -> None:
    floor_rd = floor_initrd(work / "floor.img")
    bundle = make_bundle(work / "true", ["true"])
    floor: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    cli: list[float] = []
    for _ in range(runs):  # interleaved: the host's speed drifts
        floor.append(floor_boot(image, floor_rd))
        ours.append(sandbox_true(bundle))
        cli.append(cli_true(bundle, work / "state"))
    print(f"(a) start-up, TCG, median of {runs} interleaved runs")
    print(
        "    floor (busybox sh init, same QEMU/kernel/modules/channel): first byte",
        med([f["first_byte"] for f in floor]),
    )
    for key in ("image", "qemu_start", "kernel_to_init", "python_start", "modules", "agent_ready", "ready",
                "container_started", "exit_seen", "total_to_exit", "shutdown"):  # fmt: skip
        print(f"    sevbox {key:<18} {med([o[key] for o in ours])}")
    ratio = statistics.median([o["ready"] for o in ours]) / statistics.median(
        [f["first_byte"] for f in floor]
    )
    ratio_exit = statistics.median([o["total_to_exit"] for o in ours]) / statistics.median(
        [f["first_byte"] for f in floor]
    )
    print(
        f"    agent ready / floor first byte = {ratio:.2f}x; exit seen / floor first byte = {ratio_exit:.2f}x"
    )
    print(f"    `sevbox run` of true, CLI wall (incl. interpreter start, shutdown): {med(cli)}")


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for t in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    return out


def bench_b(image: im.GuestImage, work: Path) -> None:
    bundle = make_bundle(work / "mem", ["sh", "-c", "echo ready; exec sleep 1000"])
    p = subprocess.Popen(
        [sys.executable, "-m", "sevbox", "--root", str(work / "state"), "run", "-b", str(bundle), "mem"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SEVBOX_ACCEL": "tcg"},
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        time.sleep(1.0)
        qemu = [c for c in children(p.pid) if b"qemu" in Path(f"/proc/{c}/cmdline").read_bytes()]
        mon, q = pss_kib(p.pid), pss_kib(qemu[0])
    finally:
        p.kill()
        p.wait()
    # A bare QEMU with the floor guest, held alive, for comparison.
    rd = floor_initrd(work / "floor-hold.img", hold=30)
    spec = VmSpec(kernel=image.vmlinux, initrd=rd, accel="tcg")
    spec = replace(spec, cmdline=kernel_cmdline(spec, tsc_khz=host_tsc_khz()))
    m = Machine(spec, name="bare")
    chan = m.launch()
    try:
        chan.settimeout(60)
        chan.recv(100)
        time.sleep(1.0)
        bare = pss_kib(m.pid)
    finally:
        chan.close()
        m.close()
    print("(b) host memory (PSS), 256 MiB guest, container running")
    print(
        f"    QEMU {q / 1024:.1f} MiB + monitor (sevbox run) {mon / 1024:.1f} MiB",
        f"= {(q + mon) / 1024:.1f} MiB",
    )
    print(
        f"    bare QEMU with the shell-init guest: {bare / 1024:.1f} MiB;",
        f"overhead above it {(q + mon - bare) / 1024:.1f} MiB",
    )


def bench_c(image: im.GuestImage, work: Path, mib: int) -> None:
    bundle = make_bundle(work / "tp", ["sleep", "1000"])
    b = load_bundle(bundle)
    with Sandbox.launch(rootfs=b.rootfs, name="tp", accel="tcg") as sb:
        sb.create_container(b)
        sb.start_container()
        count = mib * 16
        t0 = time.monotonic()
        sb.exec_process(
            "dd", Process(args=("dd", "if=/dev/zero", "bs=65536", f"count={count}"), env=("PATH=/bin",))
        )
        got = 0
        done = False
        while not done:
            select.select([sb.fileno()], [], [], 1)
            for ev in sb.events():
                if isinstance(ev, Output) and ev.exec_id == "dd" and ev.stream == "stdout":
                    got += len(ev.data)
                elif isinstance(ev, Exited) and ev.exec_id == "dd":
                    done = True
        dt = time.monotonic() - t0
        sb.shutdown()
    rd = floor_initrd(work / "floor.img")
    raw = floor_boot(image, rd, extra=f"floor.dd={count}", mib=mib)
    print(f"(c) stdout throughput, {mib} MiB")
    print(f"    through the agent: {got / dt / 1e6:7.1f} MB/s ({got} bytes in {dt:.2f}s)")
    print(
        f"    raw channel (guest dd into the port): {raw['bytes'] / raw['stream_s'] / 1e6:7.1f} MB/s",
        f"({raw['bytes']} bytes)",
    )


def bench_d(work: Path, runs: int) -> None:
    bundle = make_bundle(work / "true", ["true"])
    imgs = {c: im.build_image(compression=c) for c in ("lz4", "none")}
    res: dict[str, list[float]] = {c: [] for c in imgs}
    for _ in range(runs):
        for c, img in imgs.items():
            t = sandbox_true(bundle, spec_overrides={"initrd": img.initrd})
            res[c].append(t["launch_to_ready"])
    print(f"(d) initramfs compression, launch -> agent ready, median of {runs} interleaved")
    for c, xs in res.items():
        print(f"    {c:<5} {med(xs)}  ({imgs[c].initrd.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--skip", default="")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    image = im.build_image()
    print(f"guest image {image.key} ({image.initrd.stat().st_size / 1e6:.1f} MB initrd, {image.compression})")
    print(
        f"host: {os.cpu_count()} cpus;",
        subprocess.run(
            ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
    )
    with tempfile.TemporaryDirectory(prefix="sevbox-bench-") as tmp:
        work = Path(tmp)
        if "a" not in skip:
            bench_a(image, work, a.runs)
        if "b" not in skip:
            bench_b(image, work)
        if "c" not in skip:
            bench_c(image, work, a.mib)
        if "d" not in skip:
            bench_d(work, a.runs)


if __name__ == "__main__":
    main()
