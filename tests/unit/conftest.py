"""Unit tests never reach a schema registry: the codec uses the catalog's ids whatever the environment says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas import codec


@pytest.fixture(autouse=True)
def _catalog_ids() -> Iterator[None]:
    saved = (codec._Ids.source, codec._Ids.resolved, dict(codec._Ids.headers))
    codec.use_catalog_ids()
    yield
    codec._Ids.source, codec._Ids.resolved, codec._Ids.headers = saved
