"""The web process tunes Python's cyclic garbage collector when it loads."""

import gc

from cardsavr_portal import asgi


def test_loading_the_application_freezes_what_it_loaded():
    assert gc.get_freeze_count() > 0


def test_loading_the_application_widens_the_youngest_generation():
    assert gc.get_threshold()[0] == asgi.GC_YOUNG_THRESHOLD
