"""QEMU: argv from a VM spec (pure, :mod:`.argv`), one QEMU process (:mod:`.machine`), and the
accelerator choice (:mod:`.accel`)."""
