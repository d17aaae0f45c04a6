"""OCI config.json -> Bundle: the subset honoured, clear errors naming the field for the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sevbox.errors import BundleError
from sevbox.runtime.bundle import load_bundle, parse_config, parse_process


def _config(**kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "box",
        "process": {
            "terminal": False,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [5], "umask": 18},
            "args": ["sh", "-c", "true"],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/work",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": True,
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
            "consoleSize": {"height": 24, "width": 80},
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/data", "type": "bind", "source": "rootfs/srv", "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}],
            "resources": {"memory": {"limit": 1}},
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"},
        },
        "annotations": {"a": "b"},
        "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"]}]},
    }
    c.update(kw)
    return c


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs" / "srv").mkdir(parents=True)
    return tmp_path


def _write(bundle: Path, cfg: Any) -> Path:
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def test_full_config(bundle: Path) -> None:
    b = load_bundle(_write(bundle, _config()))
    assert b.rootfs == bundle / "rootfs" and b.readonly and b.hostname == "box"
    p = b.process
    assert p is not None
    assert (p.uid, p.gid, p.additional_gids, p.umask) == (1000, 100, (5,), 18)
    assert p.args == ("sh", "-c", "true") and p.cwd == "/work" and p.no_new_privileges
    assert p.rlimits[0].soft == 512 and p.console_size == (24, 80)
    assert p.capabilities == {"bounding": ("CAP_KILL",), "effective": ("CAP_KILL",)}
    assert [m.type for m in b.mounts] == ["proc", "tmpfs", "bind"]
    assert b.mounts[2].source == "/srv"  # a bind source becomes its path inside the rootfs
    assert b.masked_paths == ("/proc/kcore",) and b.readonly_paths == ("/proc/sys",)
    assert b.sysctl == {"net.ipv4.ip_forward": "1"} and b.annotations == {"a": "b"}
    assert b.hooks["prestart"][0]["path"] == "/bin/true"


def test_root_path_dot_is_the_bundle_itself(bundle: Path) -> None:
    b = load_bundle(_write(bundle, _config(root={"path": "."}, mounts=[])))
    assert b.rootfs == bundle and not b.readonly


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ociVersion": "0.9"}, "ociVersion"),
        ({"root": {"path": "missing"}}, "root.path"),
        ({"root": {}}, "root.path"),
        ({"process": {"args": []}}, "process.args"),
        ({"process": {"args": ["x"], "env": ["NOVALUE"]}}, r"process.env\[0\]"),
        ({"process": {"args": ["x"], "cwd": "relative"}}, "process.cwd"),
        ({"process": {"args": ["x"], "user": {"uid": -1}}}, "process.user.uid"),
        ({"process": {"args": ["x"], "user": {"username": "bob"}}}, "process.user.username"),
        (
            {"process": {"args": ["x"], "rlimits": [{"type": "RLIMIT_X", "hard": 1, "soft": 1}]}},
            r"process.rlimits\[0\].type",
        ),
        (
            {"process": {"args": ["x"], "rlimits": [{"type": "RLIMIT_CPU", "hard": 1, "soft": 2}]}},
            r"process.rlimits\[0\]: soft",
        ),
        ({"process": {"args": ["x"], "terminal": "yes"}}, "process.terminal"),
        (
            {"process": {"args": ["x"], "capabilities": {"bounding": ["KILL"]}}},
            "process.capabilities.bounding",
        ),
        ({"mounts": [{"destination": "/x", "type": "nfs"}]}, r"mounts\[0\].type"),
        ({"mounts": [{"destination": "x", "type": "tmpfs"}]}, r"mounts\[0\].destination"),
        ({"mounts": [{"destination": "/x", "type": "bind", "source": "/nope"}]}, r"mounts\[0\].source"),
        ({"linux": {"sysctl": {"a/b": "1"}}}, "linux.sysctl"),
        ({"hooks": {"prestart": [{"path": "relative"}]}}, r"hooks.prestart\[0\].path"),
        ({"hooks": {"sometime": []}}, "hooks.sometime"),
        ({"windows": {}}, "windows"),
        ({"hostname": 5}, "hostname"),
    ],
)
def test_bad_fields_are_named(bundle: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(BundleError, match=f"config.json: {field}"):
        load_bundle(_write(bundle, _config(**change)))


def test_missing_or_malformed_config(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no config.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100000)
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(BundleError, match="expected an object"):
        load_bundle(tmp_path)


def test_bind_source_escaping_through_a_symlink_is_refused(bundle: Path) -> None:
    (bundle / "rootfs" / "esc").symlink_to("/etc")
    cfg = _config(mounts=[{"destination": "/x", "type": "bind", "source": "rootfs/esc"}])
    with pytest.raises(BundleError, match="escapes the rootfs through a symlink"):
        load_bundle(_write(bundle, cfg))


def test_parse_process_for_exec() -> None:
    p = parse_process({"args": ["ls"], "env": [], "cwd": "/"})
    assert p.args == ("ls",) and p.uid == 0 and not p.terminal


def test_parse_config_without_file_checks() -> None:
    b = parse_config(_config(mounts=[]), Path("/nonexistent"), check_files=False)
    assert b.rootfs == Path("/nonexistent/rootfs")


def test_file_bind_from_outside_the_rootfs_is_copied_in(bundle: Path, tmp_path: Path) -> None:
    # Docker binds /etc/resolv.conf, /etc/hostname, /etc/hosts from outside the rootfs
    host_file = tmp_path / "resolv.conf"
    host_file.write_text("nameserver 10.0.0.1\n")
    cfg = _config(mounts=[{"destination": "/etc/resolv.conf", "type": "bind", "source": str(host_file),
                           "options": ["rbind", "ro"]}])  # fmt: skip
    b = load_bundle(_write(bundle, cfg))
    assert [(m.type, m.source, m.destination) for m in b.mounts] == [
        ("file", str(host_file), "/etc/resolv.conf")
    ]
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    cfg = _config(mounts=[{"destination": "/big", "type": "bind", "source": str(big)}])
    with pytest.raises(BundleError, match="larger than 64 KiB"):
        load_bundle(_write(bundle, cfg))
    vol = tmp_path / "vol"
    vol.mkdir()
    cfg = _config(mounts=[{"destination": "/vol", "type": "bind", "source": str(vol), "options": ["ro"]}])
    b = load_bundle(_write(bundle, cfg))
    assert [(m.type, m.source) for m in b.mounts] == [("share", str(vol))]  # a volume: its own 9p share
    from sevbox.sandbox import container_spec, volumes

    assert volumes(b) == (("vol0", vol, True),)
    assert [(m.type, m.source) for m in container_spec(b).mounts] == [("9p", "vol0")]
    cfg = _config(mounts=[{"destination": "/x", "type": "bind", "source": str(tmp_path / "missing")}])
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(_write(bundle, cfg))
