"""sevbox's own configuration: defaults < config file < environment < per-container annotations.

The file is TOML, ``/etc/sevbox/config.toml`` unless ``--config FILE`` or ``SEVBOX_CONFIG`` says
otherwise (a missing default file is fine; a missing named file is an error)::

    launch_security = "auto"      # auto | none | sev | sev-es | sev-snp
    require_encryption = false    # true: never start a container unencrypted
    memory_mib = 256              # guest RAM
    vcpus = 1
    accel = "auto"                # auto | kvm | tcg
    swiotlb_mib = 64              # bounce buffers for virtio under SEV (the guest's swiotlb=)
    sev_policy = 0x1              # SEV/SEV-ES guest policy (ES bit added for sev-es)
    snp_policy = 0x30000          # SNP guest policy
    ovmf = ""                     # firmware for SEV guests ("" = search the usual places)

Environment overrides: ``SEVBOX_LAUNCH_SECURITY``, ``SEVBOX_REQUIRE_ENCRYPTION`` (1/0, true/false),
``SEVBOX_MEMORY_MIB``, ``SEVBOX_VCPUS``, ``SEVBOX_ACCEL``. Annotations in a bundle's config.json:
``sevbox.launch-security`` and ``sevbox.require-encryption`` (a container may ask for more
protection than the host default, and may turn ``require_encryption`` on but never off when the
host configuration requires it).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sevbox.errors import BundleError, ConfigError

__all__ = ["LAUNCH_MODES", "Config", "load_config"]

LAUNCH_MODES = ("auto", "none", "sev", "sev-es", "sev-snp")
DEFAULT_PATH = Path("/etc/sevbox/config.toml")


@dataclass(frozen=True)
class Config:
    launch_security: str = "auto"
    require_encryption: bool = False
    memory_mib: int = 256
    vcpus: int = 1
    accel: str = "auto"
    swiotlb_mib: int = 64
    sev_policy: int = 0x1
    snp_policy: int = 0x30000
    ovmf: str = ""

    def validate(self, where: str) -> Config:
        if self.launch_security not in LAUNCH_MODES:
            raise ConfigError(f"{where}: launch_security must be one of {', '.join(LAUNCH_MODES)}")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise ConfigError(f"{where}: accel must be auto, kvm or tcg")
        if not 64 <= self.memory_mib <= 1 << 20:
            raise ConfigError(f"{where}: memory_mib must be between 64 and 1048576")
        if not 1 <= self.vcpus <= 255:
            raise ConfigError(f"{where}: vcpus must be between 1 and 255")
        if not 0 <= self.swiotlb_mib <= 4096:
            raise ConfigError(f"{where}: swiotlb_mib must be between 0 and 4096")
        if not 0 <= self.sev_policy <= 0xFFFFFFFF:
            raise ConfigError(f"{where}: sev_policy must be a 32-bit value")
        if not 0 <= self.snp_policy <= 0xFFFFFFFFFFFFFFFF:
            raise ConfigError(f"{where}: snp_policy must be a 64-bit value")
        return self

    def with_annotations(self, annotations: Mapping[str, str]) -> Config:
        """Apply a container's ``sevbox.*`` annotations (invalid values are BundleErrors)."""
        out = self
        mode = annotations.get("sevbox.launch-security")
        if mode is not None:
            if mode not in LAUNCH_MODES:
                raise BundleError(
                    f"annotation sevbox.launch-security={mode!r}: use one of {', '.join(LAUNCH_MODES)}"
                )
            out = replace(out, launch_security=mode)
        req = annotations.get("sevbox.require-encryption")
        if req is not None:
            value = _bool(req)
            if value is None:
                raise BundleError(f"annotation sevbox.require-encryption={req!r}: use true or false")
            out = replace(out, require_encryption=self.require_encryption or value)
        return out


def _bool(text: str) -> bool | None:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    return None


_ENV = {
    "SEVBOX_LAUNCH_SECURITY": "launch_security",
    "SEVBOX_REQUIRE_ENCRYPTION": "require_encryption",
    "SEVBOX_MEMORY_MIB": "memory_mib",
    "SEVBOX_VCPUS": "vcpus",
    "SEVBOX_ACCEL": "accel",
}


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    named = path if path is not None else env.get("SEVBOX_CONFIG")
    file = Path(named) if named else DEFAULT_PATH
    values: dict[str, Any] = {}
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if named:
            raise ConfigError(f"config file {file} does not exist") from None
        raw = b""
    except OSError as err:
        raise ConfigError(f"cannot read config file {file}: {err.strerror}") from None
    if raw:
        try:
            values = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {file}: {err}") from None
    known = {f.name: f.type for f in fields(Config)}
    for key in values:
        if key not in known:
            raise ConfigError(f"config file {file}: unknown setting {key!r}")
    types = {f.name: type(getattr(Config(), f.name)) for f in fields(Config)}
    for key, value in values.items():
        if types[key] is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"config file {file}: {key} must be an integer")
        if types[key] is bool and not isinstance(value, bool):
            raise ConfigError(f"config file {file}: {key} must be true or false")
        if types[key] is str and not isinstance(value, str):
            raise ConfigError(f"config file {file}: {key} must be a string")
    for var, key in _ENV.items():
        if var in env:
            text = env[var]
            if types[key] is bool:
                b = _bool(text)
                if b is None:
                    raise ConfigError(f"{var}={text!r}: use 1/0 or true/false")
                values[key] = b
            elif types[key] is int:
                try:
                    values[key] = int(text, 0)
                except ValueError:
                    raise ConfigError(f"{var}={text!r}: not an integer") from None
            else:
                values[key] = text
    return Config(**values).validate(str(file))
