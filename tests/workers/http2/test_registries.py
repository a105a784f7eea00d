"""The adapter registries serve exactly the protocol names the config accepts."""

from __future__ import annotations

from gateway.config import features
from gateway.http.versions import BACK_PROTOCOLS, FRONT_PROTOCOLS, LISTENER_FRONTS
from workers.http.registry import BACKS, FRONTS


def test_registries_match_the_names_features_are_derived_from() -> None:
    assert set(FRONTS) == FRONT_PROTOCOLS
    assert set(BACKS) == BACK_PROTOCOLS
    assert BACK_PROTOCOLS <= features.BUILT_BACKEND_PROTOCOLS
    for listener, fronts in LISTENER_FRONTS.items():
        built = set(fronts) <= set(FRONTS)
        assert (listener in features.BUILT_LISTENER_PROTOCOLS) == built, listener
