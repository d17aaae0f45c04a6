"""Every error sevbox raises on purpose, and the exit code each one means.

::

    SevboxError                       exit 1   base: a message for the user, never a traceback
     ├── UsageError                   exit 2   bad command line: unknown verb, bad flag, bad value
     ├── ConfigError                  exit 1   bad sevbox config file or environment override
     ├── BundleError                  exit 1   bad OCI bundle: config.json missing/malformed, no rootfs
     ├── ContainerError               exit 1   a container operation that cannot be done
     │    ├── InvalidIdError                   id breaks runc's rules ("../x", "", too long)
     │    ├── NotFoundError                    "container X does not exist"
     │    ├── ExistsError                      "container X already exists"
     │    └── StateError                       wrong status for the verb (.status, .required)
     ├── VmError                      exit 1   QEMU failed to start or died (.argv, .returncode, .log)
     │    └── AgentError                       the guest agent failed, refused, or broke protocol
     ├── HostError                    exit 1   this host lacks something (QEMU, kernel, KVM, SEV)
     │    └── EncryptionUnavailable            encryption was required and the host can't give it
     ├── FormatError                  exit 1   malformed input bytes: certificate, report, firmware
     └── VerificationError            exit 1   well-formed input that fails a check (signature,
                                               chain link, measurement); .check names the check

Exit codes of the ``sevbox`` command (also in README):

* 0 - success.
* 1 - an error above (message on stderr, and in ``--log`` as JSON when asked).
* 2 - usage error.
* ``run`` exits with the container's status: its exit code, or 128+N when killed by signal N.
* ``attest validate`` keeps virt-qemu-sev-validate's codes (see :class:`ValidateExit`).
"""

from __future__ import annotations

import enum

__all__ = [
    "AgentError",
    "BundleError",
    "ConfigError",
    "ContainerError",
    "EncryptionUnavailable",
    "ExistsError",
    "ExitCode",
    "FormatError",
    "HostError",
    "InvalidIdError",
    "NotFoundError",
    "SevboxError",
    "StateError",
    "UsageError",
    "ValidateExit",
    "VerificationError",
    "VmError",
]


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2


class ValidateExit(enum.IntEnum):
    """Exit codes of ``sevbox attest validate``, the same as virt-qemu-sev-validate's."""

    OK = 0
    ATTESTATION_FAILED = 1
    UNSUPPORTED = 2
    INSECURE = 3
    BAD_CONFIG = 4
    BAD_STATE = 5
    OTHER = 6


class SevboxError(Exception):
    """Base of every deliberate error. ``str(err)`` is the one-line message for the user."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(SevboxError):
    exit_code = ExitCode.USAGE


class ConfigError(SevboxError):
    pass


class BundleError(SevboxError):
    pass


class ContainerError(SevboxError):
    pass


class InvalidIdError(ContainerError):
    pass


class NotFoundError(ContainerError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} does not exist")
        self.container_id = container_id


class ExistsError(ContainerError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} already exists")
        self.container_id = container_id


class StateError(ContainerError):
    """The container is in the wrong state for the verb."""

    def __init__(self, message: str, *, status: str, required: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.required = required


class VmError(SevboxError):
    """QEMU could not be launched, or the VM died. Carries what is needed to see why."""

    def __init__(
        self,
        message: str,
        *,
        argv: list[str] | None = None,
        returncode: int | None = None,
        log: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv or []
        self.returncode = returncode
        self.log = log


class AgentError(VmError):
    pass


class HostError(SevboxError):
    pass


class EncryptionUnavailable(HostError):
    pass


class FormatError(SevboxError):
    """Malformed bytes. ``what`` names the object being parsed (e.g. "SEV certificate")."""

    def __init__(self, message: str, *, what: str = "") -> None:
        super().__init__(message)
        self.what = what


class VerificationError(SevboxError):
    """Well-formed input that fails a check. ``check`` names the check that failed."""

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check
