from __future__ import annotations

from collections.abc import Iterator

import pytest
from cells import Cells, running_cells


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cells]:
    with running_cells(tmp_path_factory.mktemp("cells")) as running:
        yield running
