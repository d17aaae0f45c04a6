"""The memory scanner on a real process: a child that holds a canary in an anonymous mapping."""

from __future__ import annotations

import mmap
import os
import secrets
import signal
import time

from sevbox.runtime.memscan import invert, parse_maps, scan

MAPS = """\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
7f0010000000-7f0010200000 rw-s 00000000 00:05 77 /memfd:pc.ram (deleted)
7f0020000000-7f0020100000 rw-p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
"""


def test_parse_maps_keeps_anonymous_and_memfd_rw_regions() -> None:
    regions = parse_maps(MAPS)
    assert [(hex(r.start), r.name) for r in regions] == [
        ("0x7f0000000000", ""),
        ("0x7f0010000000", "/memfd:pc.ram (deleted)"),
        ("0x7ffd00000000", "[stack]"),
    ]
    assert regions[0].size == 0x10000000


def test_invert_round_trips() -> None:
    c = secrets.token_bytes(32)
    assert invert(invert(c)) == c and invert(c) != c


def test_finds_canary_in_a_child_process_and_not_an_absent_one() -> None:
    canary = secrets.token_bytes(32)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: put the canary deep in a large anonymous mapping, then wait
        os.close(r)
        m = mmap.mmap(-1, 8 << 20)
        m[5_000_001 : 5_000_001 + 32] = canary
        os.write(w, b"ready")
        time.sleep(60)
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 5) == b"ready"
        result = scan(pid, canary)
        assert result.hits, "the canary is in plaintext in the child: it must be found"
        assert result.scanned >= 8 << 20
        absent = scan(pid, secrets.token_bytes(32))
        assert absent.hits == [] and absent.scanned >= 8 << 20
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
