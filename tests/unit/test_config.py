from __future__ import annotations

from pathlib import Path

import pytest

from sevbox.config import Config, load_config
from sevbox.errors import BundleError, ConfigError


def test_defaults_from_an_empty_file(tmp_path: Path) -> None:
    cfg = load_config(_empty(tmp_path), environ={})
    assert cfg == Config()
    assert cfg.launch_security == "auto" and cfg.require_encryption is False


def test_file_then_env(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('launch_security = "sev-snp"\nrequire_encryption = true\nmemory_mib = 512\n')
    cfg = load_config(f, environ={})
    assert (cfg.launch_security, cfg.require_encryption, cfg.memory_mib) == ("sev-snp", True, 512)
    cfg = load_config(f, environ={"SEVBOX_LAUNCH_SECURITY": "none", "SEVBOX_MEMORY_MIB": "0x200"})
    assert cfg.launch_security == "none" and cfg.memory_mib == 512


@pytest.mark.parametrize(
    "text, needle",
    [
        ('launch_security = "tdx"', "launch_security must be one of"),
        ("require_encryption = 1", "must be true or false"),
        ("memory_mib = 1", "memory_mib must be between"),
        ("colour = 3", "unknown setting 'colour'"),
        ("memory_mib = ", "config file"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(f, environ={})


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_bad_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SEVBOX_REQUIRE_ENCRYPTION"):
        load_config(_empty(tmp_path), environ={"SEVBOX_REQUIRE_ENCRYPTION": "maybe"})


def _empty(tmp_path: Path) -> Path:
    f = tmp_path / "empty.toml"
    f.write_text("")
    return f


def test_annotations_can_tighten_never_loosen() -> None:
    base = Config(require_encryption=True)
    assert base.with_annotations({"sevbox.require-encryption": "false"}).require_encryption is True
    assert Config().with_annotations({"sevbox.require-encryption": "true"}).require_encryption is True
    assert Config().with_annotations({"sevbox.launch-security": "sev-es"}).launch_security == "sev-es"
    with pytest.raises(BundleError, match="sevbox.launch-security"):
        Config().with_annotations({"sevbox.launch-security": "yes"})
    with pytest.raises(BundleError, match="sevbox.require-encryption"):
        Config().with_annotations({"sevbox.require-encryption": "perhaps"})
