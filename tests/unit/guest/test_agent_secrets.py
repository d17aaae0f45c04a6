"""The agent's launch-secret copy (sevbox.secrets), against a FAKE securityfs tree (a directory of
<GUID> files standing in for /sys/kernel/security/secrets/coco), and the annotation on the wire."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sevbox import protocol as P
from sevbox.errors import BundleError
from sevbox.guest.agent import main as agent
from sevbox.runtime.bundle import load_bundle
from sevbox.sandbox import container_spec

G1 = "736869e5-84f0-4973-92ec-06879ce3da0b"
G2 = "0A0B0C0D-1111-2222-3333-444455556666"


@pytest.fixture
def fake_area(tmp_path: Path) -> Path:
    area = tmp_path / "securityfs" / "secrets" / "coco"  # FAKE securityfs
    area.mkdir(parents=True)
    (area / G1).write_bytes(b"luks passphrase\n")
    (area / G2.lower()).write_bytes(bytes(range(256)))
    return area


def install(
    secrets: tuple[tuple[str, str], ...],
    root: Path,
    area: str,
    stage: Path,
    *,
    mount_fn: Any = None,
    uid: int = 0,
) -> str:
    return agent.place_secrets(
        agent.read_secrets(secrets, area), str(root), uid=uid, gid=99, stage=str(stage), mount_fn=mount_fn
    )


def test_secrets_copied_mode_0400_owned_by_the_process_user(tmp_path: Path, fake_area: Path) -> None:
    root, stage = tmp_path / "container", tmp_path / "stage"
    mounts: list[tuple[Any, ...]] = []
    secrets = P.parse_secrets(f"luks={G1}, blob={G2}")
    target = install(secrets, root, str(fake_area), stage, mount_fn=lambda *a: mounts.append(a), uid=1234)
    assert target == f"{root}/run/secrets" and os.path.isdir(target)
    assert (stage / "luks").read_bytes() == b"luks passphrase\n"
    assert (stage / "blob").read_bytes() == bytes(range(256))
    for name in ("luks", "blob"):
        st = (stage / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (1234, 99)
    # the files live on the agent's own tmpfs, bind-mounted onto the container's /run/secrets
    assert mounts[0][:3] == ("tmpfs", str(stage), "tmpfs")
    assert mounts[1] == (str(stage), target, None, agent.MS_BIND)


def test_no_secret_area_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no launch secret area") as err:
        install((("k", G1),), tmp_path / "c", "", tmp_path / "s")
    assert "efi_secret" in str(err.value.strerror)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


def test_missing_secret_fails_before_anything_is_written(tmp_path: Path, fake_area: Path) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(OSError) as err:
        install(P.parse_secrets(f"luks={G1},api={missing}"), tmp_path / "c", str(fake_area), tmp_path / "s")
    assert err.value.strerror == f"launch secret 'api' ({missing}) is missing from {fake_area}"
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def test_symlinked_secret_is_refused(tmp_path: Path, fake_area: Path) -> None:
    other = "99999999-2222-3333-4444-555555555555"
    (fake_area / other).symlink_to(fake_area / G1)
    with pytest.raises(OSError):
        install((("x", other),), tmp_path / "c", str(fake_area), tmp_path / "s")


def test_create_checks_secrets_before_mounting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts: list[tuple[Any, ...]] = []
    monkeypatch.setattr(agent, "mount", lambda *a: mounts.append(a))
    monkeypatch.setattr(agent, "find_secret_area", lambda: "")
    spec = P.ContainerSpec(process=P.ProcessSpec(args=("true",)), secrets=(("k", G1),))
    with pytest.raises(OSError, match="no launch secret area"):
        agent.setup_container(spec, str(tmp_path / "root"))
    assert mounts == [] and not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    "text",
    ["", "luks", f"={G1}", f"a/b={G1}", f"..={G1}", "k=not-a-guid", f"k={G1}x", f"k={G1},k={G2}",
     f"k={G1},", "k=" + "g" * 8 + G1[8:]],
)  # fmt: skip
def test_bad_annotation_rejected(text: str) -> None:
    with pytest.raises(P.ProtocolError):
        P.parse_secrets(text)


def test_secrets_on_the_wire_validated_on_arrival() -> None:
    spec = P.ContainerSpec(process=P.ProcessSpec(args=("true",)), secrets=P.parse_secrets(f"a={G2}"))
    obj = P.CreateContainer(spec).to_obj()
    assert obj["container"]["secrets"] == [["a", G2.lower()]]  # type: ignore[index]
    assert P.decode_request(json.dumps(obj).encode()) == P.CreateContainer(spec)
    plain = P.CreateContainer(P.ContainerSpec(process=P.ProcessSpec(args=("true",)))).to_obj()
    assert "secrets" not in plain["container"]  # type: ignore[operator]
    for bad in ([["../x", G1]], [["a", "zz"]], [["a"]], "a", [["a", G1], ["a", G2]]):
        obj["container"]["secrets"] = bad  # type: ignore[index]
        with pytest.raises(P.ProtocolError):
            P.decode_request(json.dumps(obj).encode())


def test_bundle_annotation_reaches_the_spec(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    cfg = {"ociVersion": "1.2.0", "process": {"args": ["true"], "cwd": "/"}, "root": {"path": "rootfs"},
           "annotations": {"sevbox.secrets": f"db={G1}"}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert container_spec(load_bundle(tmp_path)).secrets == (("db", G1),)
    cfg["annotations"] = {"sevbox.secrets": "db=nope"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="sevbox.secrets"):
        container_spec(load_bundle(tmp_path))
