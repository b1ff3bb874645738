"""Session set-up shared by unit and integration tests."""

from __future__ import annotations

import pytest

from services.settings import get_settings


def pytest_configure(config: pytest.Config) -> None:
    """With STOCKLEDGER_REGISTRY_URL set (make test) the codec takes its ids from that registry: register the catalog
    first, as `stockledger topics create` would, before any test module is imported (some build encoded samples at
    import) and before any process a test starts encodes. A fresh registry (a fresh clone's) holds nothing."""
    from schemas.registry import RegistryError, register_catalog

    url = get_settings().registry_url
    if not url:
        return
    try:
        report = register_catalog(url)
    except RegistryError as exc:
        raise pytest.UsageError(f"STOCKLEDGER_REGISTRY_URL is set but the registry cannot take the catalog: {exc}") from exc
    if not report.ok:
        raise pytest.UsageError(f"the schema registry disagrees with the catalog:\n{report.summary()}")
