"""sevbox: OCI containers in AMD SEV-encrypted micro-VMs, and the guest owner's tools to prove it."""

__version__ = "0.1.0"
__all__ = ["__version__"]
