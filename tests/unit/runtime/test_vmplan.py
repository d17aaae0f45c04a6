"""vmplan: the owner's launch session reaches the sev-guest object; misuse is a clear BundleError."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevbox.config import Config
from sevbox.errors import BundleError
from sevbox.launch import HostAbilities, choose
from sevbox.runtime.vmplan import owner_session, sandbox_args

READY = HostAbilities(ready={"sev": True, "sev-es": True, "sev-snp": True}, why={}, cbitpos=51,
                      reduced_phys_bits=1)  # fmt: skip


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "keys").mkdir()
    (tmp / "keys" / "godh.b64").write_text("AAAA")
    (tmp / "keys" / "session.b64").write_text("AAAA")
    return {"sevbox.sev.dh-cert-file": "keys/godh.b64", "sevbox.sev.session-file": "keys/session.b64"}


@pytest.mark.parametrize("mode", ["sev", "sev-es"])
def test_session_files_reach_the_sev_guest_object(tmp_path: Path, mode: str) -> None:
    session = owner_session(_files(tmp_path), tmp_path)
    config = Config(launch_security=mode)
    args = sandbox_args(choose(config, READY), config, session)
    obj = next(o for o in args["spec_overrides"]["objects"] if o.startswith("sev-guest"))
    opts = obj.split(",")
    assert f"dh-cert-file={tmp_path / 'keys/godh.b64'}" in opts
    assert f"session-file={tmp_path / 'keys/session.b64'}" in opts


def test_session_misuse(tmp_path: Path) -> None:
    ann = _files(tmp_path)
    assert owner_session({}, tmp_path) is None
    with pytest.raises(BundleError, match="go together"):
        owner_session({"sevbox.sev.dh-cert-file": "keys/godh.b64"}, tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        owner_session({**ann, "sevbox.sev.session-file": "keys/nope"}, tmp_path)
    config = Config(launch_security="sev-snp")
    with pytest.raises(BundleError, match="needs SEV or SEV-ES"):
        sandbox_args(choose(config, READY), config, owner_session(ann, tmp_path))
