"""A periodic reload that read the catalog before an operator's change must not put the old copy back.

The change's own reload (``Catalog.load`` from the catalog broadcast) starts
while a periodic reload is still reading; whichever finishes last used to win.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from relay_server.domain.catalog import CatalogEntry
from relay_server.pipeline.routing.catalog import Catalog


def _entry(name: str) -> CatalogEntry:
    return CatalogEntry(name, name, "openai", "openai", name, "chat", Decimal(1), Decimal(2), 1000, None, "openai", 0)


class SlowThenFresh:
    """The first read sees the table before the change and is slow to return; later reads see it after."""

    def __init__(self) -> None:
        self.release_first = asyncio.Event()
        self.reads = 0

    async def load_catalog(self) -> list[CatalogEntry]:
        self.reads += 1
        if self.reads == 1:
            stale = [_entry("old-model")]
            await self.release_first.wait()
            return stale
        return [_entry("new-model")]


async def test_a_slow_periodic_read_never_overwrites_the_change_reload() -> None:
    store = SlowThenFresh()
    catalog = Catalog(store)
    periodic = asyncio.create_task(catalog._reload.now())  # the timer fired just before the change
    await asyncio.sleep(0)
    change = asyncio.create_task(catalog.load())  # the broadcast's reload, after commit
    await asyncio.sleep(0)
    store.release_first.set()
    await asyncio.wait_for(asyncio.gather(periodic, change), 5)
    assert [e.relay_name for e in catalog.entries()] == ["new-model"]
    assert store.reads == 2
