"""The serving worker's garbage collector settings (``app.relax_young_gc``)."""

from __future__ import annotations

import gc

from relay_server.app import YOUNG_GC_THRESHOLD, relax_young_gc


def test_the_youngest_generation_waits_longer_and_the_older_ones_keep_their_settings() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        relax_young_gc()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 11, 12)
        assert YOUNG_GC_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
