"""The guest image builder: cpio writer, module dependencies, vmlinux extraction, reproducibility."""

from __future__ import annotations

import lzma
import os
import struct
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from sevbox.errors import FormatError
from sevbox.guest import image as im

KDIR = Path("/var/lib/sevbox/kernel")


def _parse_newc(blob: bytes) -> list[tuple[str, int, int, bytes]]:
    """An independent newc reader: (name, ino, mode, data) per entry, up to the trailer."""
    out = []
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        f = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = blob[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        data = blob[pos : pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert blob[pos:].strip(b"\0") == b""  # only page padding after the trailer
            return out
        assert f[2] == f[3] == f[5] == 0  # uid, gid, mtime fixed
        out.append((name, f[0], f[1], data))


def test_newc_archive_layout() -> None:
    blob = im.newc_archive(
        [
            im.CpioEntry("/usr/bin/tool", 0o100755, b"abc"),
            im.CpioEntry("init", 0o100755, b"#!x\n"),
            im.CpioEntry("lib64/ld.so", 0o120777, b"/lib/x"),
        ]
    )
    entries = _parse_newc(blob)
    names = [e[0] for e in entries]
    assert names == ["init", "lib64", "lib64/ld.so", "usr", "usr/bin", "usr/bin/tool"]
    assert [e[1] for e in entries] == list(range(1, 7))
    assert dict((e[0], e[3]) for e in entries)["usr/bin/tool"] == b"abc"
    assert dict((e[0], e[2]) for e in entries)["usr"] == 0o040755


def test_newc_is_order_independent_and_readable_by_cpio(tmp_path: Path) -> None:
    a = [im.CpioEntry("b/c", 0o100644, b"1" * 5), im.CpioEntry("a", 0o100600, b"")]
    assert im.newc_archive(a) == im.newc_archive(list(reversed(a)))
    out = subprocess.run(
        ["cpio", "-i", "-d", "--quiet"],
        input=im.newc_archive(a),
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert out.returncode == 0
    assert (tmp_path / "b" / "c").read_bytes() == b"11111"
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("path", ["", "/", "a/../b"])
def test_newc_refuses_bad_paths(path: str) -> None:
    with pytest.raises(ValueError, match="bad archive path"):
        im.newc_archive([im.CpioEntry(path, 0o100644, b"")])


def test_newc_refuses_conflicting_duplicates() -> None:
    with pytest.raises(ValueError, match="two different"):
        im.newc_archive([im.CpioEntry("a", 0o100644, b"1"), im.CpioEntry("a", 0o100644, b"2")])


def _elf_with_modinfo(modinfo: bytes) -> bytes:
    """A minimal ELF64 with sections: null, .modinfo, .shstrtab."""
    shstr = b"\0.modinfo\0.shstrtab\0"
    body_off = 64
    modinfo_off = body_off
    shstr_off = modinfo_off + len(modinfo)
    shoff = shstr_off + len(shstr)
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", hdr, 0x28, shoff)
    struct.pack_into("<HHH", hdr, 0x3A, 64, 3, 2)
    secs = bytes(64)
    secs += struct.pack("<IIQQQQ", 1, 1, 0, 0, modinfo_off, len(modinfo)) + bytes(24)
    secs += struct.pack("<IIQQQQ", 10, 3, 0, 0, shstr_off, len(shstr)) + bytes(24)
    return bytes(hdr) + modinfo + shstr + secs


def test_modinfo_depends_synthetic() -> None:
    assert im.modinfo_depends(_elf_with_modinfo(b"license=GPL\0depends=a,b-c\0")) == ("a", "b-c")
    assert im.modinfo_depends(_elf_with_modinfo(b"depends=\0")) == ()


@pytest.mark.parametrize(
    "blob", [b"", b"\x7fELF", b"MZ" + bytes(100), _elf_with_modinfo(b"depends=a\0")[:-40]]
)
def test_modinfo_depends_malformed(blob: bytes) -> None:
    with pytest.raises(FormatError):
        im.modinfo_depends(blob)


def test_modinfo_depends_of_the_pinned_kernel() -> None:
    ko = next(KDIR.glob("lib/modules/*/kernel/fs/9p/9p.ko"))
    assert set(im.modinfo_depends(ko.read_bytes())) == {"9pnet", "fscache", "netfs"}


def test_module_load_order() -> None:
    deps = {"9p": ("9pnet", "fscache", "netfs"), "fscache": ("netfs",), "9pnet": (), "netfs": ()}
    order = im.module_load_order(["9p"], lambda n: deps[n])
    assert order.index("netfs") < order.index("fscache") < order.index("9p")
    assert order.index("9pnet") < order.index("9p") and len(order) == 4
    cyc = {"a": ("b",), "b": ("a",)}
    with pytest.raises(FormatError, match="cycle"):
        im.module_load_order(["a"], lambda n: cyc[n])


def test_extract_vmlinux_synthetic_and_corrupt() -> None:
    elf = b"\x7fELF" + os.urandom(5000)
    setup = bytearray(0x400)
    setup[0x202:0x206] = b"HdrS"
    good = bytes(setup) + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert im.extract_vmlinux(good) == elf
    with pytest.raises(FormatError, match="HdrS"):
        im.extract_vmlinux(b"\0" * 0x300)
    with pytest.raises(FormatError, match="no XZ"):
        im.extract_vmlinux(bytes(setup))
    with pytest.raises(FormatError, match="corrupt"):
        im.extract_vmlinux(bytes(setup) + im.XZ_MAGIC + b"\0" * 64)


def test_pad_initrd() -> None:
    assert im.pad_initrd(b"x" * 4096) == b"x" * 4096
    padded = im.pad_initrd(b"x" * 3331)
    assert len(padded) == 4096 and padded[3331:] == bytes(765)


def test_pyc_bytes_is_deterministic_and_loadable() -> None:
    src = b"X = [i * 2 for i in range(3)]\ndef f():\n    'doc'\n    return X\n"
    a, b = im.pyc_bytes(src, "m.py"), im.pyc_bytes(src, "m.py")
    assert a == b
    import marshal

    ns: dict[str, object] = {}
    exec(marshal.loads(a[16:]), ns)
    assert ns["X"] == [0, 2, 4]


def test_build_is_reproducible_and_complete(tmp_path: Path) -> None:
    one = im.build_image(compression="none", cache_dir=tmp_path / "a", force=True)
    two = im.build_image(compression="none", cache_dir=tmp_path / "b", force=True)
    assert one.key == two.key
    blob = one.initrd.read_bytes()
    assert blob == two.initrd.read_bytes()
    assert len(blob) % 4096 == 0  # see pad_initrd: microvm's ACPI tables share the last page
    entries = {e[0]: e for e in _parse_newc(blob)}
    for need in (
        "init",
        "usr/bin/python3.11",
        "lib64/ld-linux-x86-64.so.2",
        "usr/lib/python311.zip",
        "etc/sevbox/modules",
    ):
        assert need in entries, need
    assert entries["init"][3].startswith(b"#!/usr/bin/python3.11 -IS")
    mods = dict(line.split(" ", 1) for line in entries["etc/sevbox/modules"][3].decode().splitlines())
    mmio = mods["mmio"].split()
    assert mmio.index("virtio") < mmio.index("virtio_mmio") < mmio.index("virtio_console")
    assert mmio.index("netfs") < mmio.index("9p") and "virtio_pci" not in mmio
    for m in mods["pci"].split() + mmio:
        assert f"lib/modules/{m}.ko" in entries
    names = zipfile.ZipFile(BytesIO(entries["usr/lib/python311.zip"][3])).namelist()
    assert "sevbox/guest/agent/main.pyc" in names and "sevbox/protocol.pyc" in names
    assert "json/__init__.pyc" in names and "ctypes/__init__.pyc" in names
    assert not any(n.endswith(".py") for n in names)  # precompiled only
    # The cache: same inputs -> the stored image, without a rebuild.
    again = im.build_image(compression="none", cache_dir=tmp_path / "a")
    assert again.initrd.stat().st_mtime_ns == one.initrd.stat().st_mtime_ns
    assert one.vmlinux.read_bytes()[:4] == b"\x7fELF"


def test_lz4_image_is_legacy_frame(tmp_path: Path) -> None:
    img = im.build_image(compression="lz4", cache_dir=tmp_path, force=True)
    blob = img.initrd.read_bytes()
    assert blob[:4] == bytes.fromhex("02214c18")  # lz4 legacy magic: what the kernel unpacks
    assert len(blob) % 4096 == 0
    # lz4's CLI stops at the page padding with an error; the kernel skips the zeros. The archive is whole:
    raw = subprocess.run(["lz4", "-d", "-c"], input=blob, capture_output=True, check=False).stdout
    assert raw[:6] == b"070701" and b"TRAILER!!!" in raw[-200:]


def test_cache_memo_skips_rehashing_until_an_input_changes(tmp_path: Path) -> None:
    import json as _json

    first = im.build_image(compression="none", cache_dir=tmp_path)
    memo_path = tmp_path / "last-none.json"
    memo = _json.loads(memo_path.read_text())
    assert memo["key"] == first.key and str(im.PYTHON) in memo["inputs"]
    assert im._memo_lookup(tmp_path, "none") == first
    # Pretend a watched input changes: the memo no longer answers, the full path does.
    watched = tmp_path / "input.txt"
    watched.write_text("a")
    memo["inputs"].append(str(watched))
    memo["fingerprint"] = im._fingerprint(memo["inputs"])
    memo_path.write_text(_json.dumps(memo))
    assert im._memo_lookup(tmp_path, "none") == first
    os.utime(watched, ns=(1, 1))
    assert im._memo_lookup(tmp_path, "none") is None
    again = im.build_image(compression="none", cache_dir=tmp_path)
    assert again.key == first.key
    assert im._memo_lookup(tmp_path, "none") == first  # re-memoised by the full path
