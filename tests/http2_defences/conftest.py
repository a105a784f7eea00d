from __future__ import annotations

from collections.abc import Iterator

import pytest
from defence_gateway import DefenceGateway, running_defence_gateway


# One gateway for the three modules of this directory (every test reads counters as deltas
# and opens its own connections): each gateway + hypercorn start costs ~5 s.
@pytest.fixture(scope="session")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefenceGateway]:
    with running_defence_gateway(tmp_path_factory.mktemp("h2dos")) as running:
        yield running
