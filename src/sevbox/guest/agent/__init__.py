"""The sevbox guest agent: PID 1 inside the micro-VM, stdlib only (see :mod:`.main`)."""
