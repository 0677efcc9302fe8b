"""Lazy walks over AIP-158 paginated ``List*`` RPCs.

A pager fetches a page only when the caller has consumed the previous one and
stops at the first empty ``next_page_token``.  Each fresh iteration walks from
the starting token again.  Every page fetch is an ordinary call, so it gets the
usual retries (list calls are reads) and error mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

ItemT = TypeVar("ItemT")
PageT = TypeVar("PageT", bound=Message)


def _next_token(page: Message, token: str) -> str:
    next_token: str = getattr(page, "next_page_token")
    if next_token and next_token == token:
        # A server bug would otherwise loop forever on the same page.
        raise RuntimeError(f"server returned the same page token twice ({token!r})")
    return next_token


class Pager(Generic[ItemT, PageT]):
    """Iterate to get every item; :meth:`pages` gives the raw page responses instead."""

    def __init__(self, fetch: Callable[[str], PageT], items_field: str, page_token: str = "") -> None:
        self._fetch = fetch
        self._items_field = items_field
        self._first_token = page_token

    def pages(self) -> Iterator[PageT]:
        token = self._first_token
        while True:
            page = self._fetch(token)
            yield page
            token = _next_token(page, token)
            if not token:
                return

    def __iter__(self) -> Iterator[ItemT]:
        for page in self.pages():
            items: Any = getattr(page, self._items_field)
            yield from items


class AsyncPager(Generic[ItemT, PageT]):
    """``async for`` over every item; :meth:`pages` gives the raw page responses instead."""

    def __init__(self, fetch: Callable[[str], Awaitable[PageT]], items_field: str, page_token: str = "") -> None:
        self._fetch = fetch
        self._items_field = items_field
        self._first_token = page_token

    async def pages(self) -> AsyncIterator[PageT]:
        token = self._first_token
        while True:
            page = await self._fetch(token)
            yield page
            token = _next_token(page, token)
            if not token:
                return

    async def _items(self) -> AsyncIterator[ItemT]:
        async for page in self.pages():
            items: Any = getattr(page, self._items_field)
            for item in items:
                yield item

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self._items()
