"""The guest side: the image builder (``sevbox.guest.image``, host-only) and the agent package
(``sevbox.guest.agent``, runs as PID 1 inside the VM, stdlib only).

Keep this file free of imports: the image builder lists what the agent imports, and this module
is on that path.
"""
