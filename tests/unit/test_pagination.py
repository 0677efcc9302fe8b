from __future__ import annotations

import pytest

from relay_server.api.pagination import MAX_PAGE_SIZE, page
from relay_server.errors import RelayError


def test_walks_every_item_once() -> None:
    items = [f"m{i:03d}" for i in range(23)]
    seen, token = [], ""
    while True:
        chunk, token = page(items, 5, token, key=str)
        seen += chunk
        if not token:
            break
    assert seen == sorted(items)


def test_bounds_and_bad_tokens() -> None:
    chunk, _ = page(list(map(str, range(5000))), 100000, "", key=str)
    assert len(chunk) == MAX_PAGE_SIZE
    with pytest.raises(RelayError):
        page(["a"], 1, "%%%not-base64", key=str)
    with pytest.raises(RelayError):
        page(["a"], -1, "", key=str)
