"""What this host (or, inside a guest, this machine) can do: effects at the edge.

* :mod:`sevbox.host.probe` - ``sevbox check``: CPU, kernel, KVM, /dev/sev, QEMU, OVMF, libvirt
  readiness for VMs and SEV, SEV-ES, SEV-SNP guests; :func:`sevbox.host.probe.sev_params`.
* :mod:`sevbox.host.sevdev` - /dev/sev ioctls (PLATFORM_STATUS, PDH_CERT_EXPORT, GET_ID).
* :mod:`sevbox.host.msr` - MSR SEV_STATUS decoding and reading (stdlib only, guest-safe).
* :mod:`sevbox.host.guestcheck` - ``sevbox guest-check``: is this machine's memory encrypted.
* :mod:`sevbox.host.kmsg` - the kernel log, for the kernel's own words on memory encryption.

Submodules are imported on demand; importing this package is free.
"""
