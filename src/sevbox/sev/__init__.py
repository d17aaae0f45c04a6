"""Pure SEV, SEV-ES and SEV-SNP objects: bytes in, bytes out (no files, processes or clocks)."""
