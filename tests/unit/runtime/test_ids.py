from __future__ import annotations

import pytest

from sevbox.errors import InvalidIdError
from sevbox.runtime.ids import MAX_ID_LENGTH, validate_id


@pytest.mark.parametrize("good", ["a", "abc-123", "x_y+z.w", "A" * MAX_ID_LENGTH, "0"])
def test_good_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "../x", "/", "a/b", "a b", "x\n", "é", "A" * (MAX_ID_LENGTH + 1), "a\x00"]
)
def test_bad_ids(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        validate_id(bad)
