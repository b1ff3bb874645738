"""The codec's registry ids (schemas/registry.RegistryIds) with a stand-in client: agreement with the catalog is enforced."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas import catalog
from schemas.registry import (
    RegistryIds,
    RegistryUnavailable,
    SchemaIdMismatch,
    SchemaNotRegistered,
    subject_of,
)


class FakeClient:
    def __init__(self, ids: dict[str, int] | None = None, error: Exception | None = None):
        self.ids, self.error, self.calls = ids or {}, error, []

    def lookup_schema(self, subject, schema):
        self.calls.append(subject)
        if self.error:
            raise self.error
        if subject not in self.ids:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return SimpleNamespace(schema_id=self.ids[subject], version=1)


def _ids(client: FakeClient) -> RegistryIds:
    ids = RegistryIds("http://registry.invalid/apis/ccompat/v6")
    ids._client = client
    return ids


def test_the_registry_id_is_used_once_looked_up_and_cached():
    entry = catalog.LATEST["PostingBatch"]
    client = FakeClient({subject_of(entry): entry.schema_id})
    ids = _ids(client)
    assert ids.wire_id(entry) == entry.schema_id
    assert ids.wire_id(entry) == entry.schema_id
    assert client.calls == ["stockledger.v1.PostingBatch"]


def test_an_id_other_than_the_catalogs_is_refused():
    entry = catalog.LATEST["PostingBatch"]
    with pytest.raises(SchemaIdMismatch, match=f"id 99, the catalog .* uses {entry.schema_id}"):
        _ids(FakeClient({subject_of(entry): 99})).wire_id(entry)


def test_an_unregistered_schema_names_the_fix():
    with pytest.raises(SchemaNotRegistered, match="stockledger topics create"):
        _ids(FakeClient()).wire_id(catalog.LATEST["Burn"])


def test_a_registry_that_does_not_answer_is_named():
    with pytest.raises(RegistryUnavailable, match="registry.invalid"):
        _ids(FakeClient(error=ConnectionError("refused"))).wire_id(catalog.LATEST["Burn"])
