"""A real (TCG, unencrypted) guest asked for launch secrets: the create fails with the plain "no launch
secret area" message, and the same VM still takes a container without them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sevbox.errors import ContainerError
from sevbox.runtime.bundle import load_bundle
from sevbox.sandbox import Sandbox

pytestmark = pytest.mark.vm

GUID = "736869e5-84f0-4973-92ec-06879ce3da0b"


def test_no_launch_secret_area_in_a_real_guest(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(["true"], annotations={"sevbox.secrets": f"luks={GUID}"})
    b = load_bundle(bundle)
    sb = Sandbox.launch(rootfs=b.rootfs, name="secretvm")
    try:
        with pytest.raises(ContainerError) as err:
            sb.create_container(b)
        message = str(err.value)
        assert "no launch secret area" in message and "/sys/kernel/security/secrets/coco" in message
        assert "\n" not in message and "Traceback" not in message
        assert not (bundle / "rootfs" / "run" / "secrets").exists()  # nothing was written to the host's share
        plain = json.loads((bundle / "config.json").read_text())
        plain.pop("annotations")
        (bundle / "config.json").write_text(json.dumps(plain))
        sb.create_container(load_bundle(bundle))  # the agent is still fine
        sb.ping()
    finally:
        sb.close()
