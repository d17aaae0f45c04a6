"""Container ids, by runc's rules: letters, digits, ``_ + - .``; not ``.`` or ``..``; bounded length."""

from __future__ import annotations

import re

from sevbox.errors import InvalidIdError

__all__ = ["MAX_ID_LENGTH", "validate_id"]

MAX_ID_LENGTH = 200  # a state directory name must fit in NAME_MAX (255) with room for temp suffixes
_ID = re.compile(r"[A-Za-z0-9_+.\-]+")


def validate_id(container_id: str) -> str:
    """Return the id if runc would accept it, else raise InvalidIdError naming the rule broken."""
    if not container_id:
        raise InvalidIdError("invalid container id: empty")
    if len(container_id) > MAX_ID_LENGTH:
        raise InvalidIdError(f"invalid container id: longer than {MAX_ID_LENGTH} characters")
    if container_id in (".", "..") or not _ID.fullmatch(container_id):
        raise InvalidIdError(
            f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-' and '.'"
        )
    return container_id
