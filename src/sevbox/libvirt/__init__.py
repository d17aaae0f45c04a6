"""libvirt domains for SEV guests: generate (:mod:`.domain`) and check (:mod:`.lint`) domain XML."""
