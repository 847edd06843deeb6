"""The JSON schema and the table: stable fields, no values, stale only with an expectation."""

from __future__ import annotations

import io
import json

from rich.console import Console

from kms_storage_migrator.inventory.counts import ClassifiedObject, Inventory
from kms_storage_migrator.inventory.report import SCHEMA_VERSION, print_table, summary_line, to_json
from kms_storage_migrator.storage.formats import DEK_SOURCE_HKDF_SEED, FormatKind, StoredFormat
from kms_storage_migrator.storage.keys import StoredKey
from kms_storage_migrator.storage.write_format import WriteFormat

KEY_A = StoredFormat(
    FormatKind.KMS_V2, provider="local-kms", key_id="a", dek_source_type=DEK_SOURCE_HKDF_SEED
)
PLAIN = StoredFormat(FormatKind.PLAINTEXT_PROTOBUF)


def sample(expectation: WriteFormat | None) -> Inventory:
    inventory = Inventory(expectation, revision=42)
    secret = StoredKey("", "secrets", "ns", "s", True)
    deployment = StoredKey("apps", "deployments", "ns", "d", True)
    for key, stored in ((secret, PLAIN), (secret, KEY_A), (deployment, KEY_A)):
        inventory.record(ClassifiedObject("k", key, stored, 1))
    return inventory


def test_json_schema() -> None:
    document = to_json(sample(WriteFormat.for_key_id("a")))
    assert document == {
        "schema_version": SCHEMA_VERSION,
        "revision": 42,
        "expected": {
            "format": "kms-v2",
            "provider": None,
            "key_id": "a",
            "key_name": None,
            "dek_source_type": 1,
            "source": "--expect-key-id",
        },
        "resources": [
            {
                "group": "",
                "resource": "secrets",
                "total": 2,
                "plaintext": 1,
                "kmsv2": {"a": 1},
                "other": 0,
                "unknown": 0,
                "not_rewritable": 0,
                "stale": 1,
            },
            {
                "group": "apps",
                "resource": "deployments",
                "total": 1,
                "plaintext": 0,
                "kmsv2": {"a": 1},
                "other": 0,
                "unknown": 0,
                "not_rewritable": 0,
                "stale": 0,
            },
        ],
        "summary": {
            "total": 3,
            "plaintext": 1,
            "kmsv2": {"a": 2},
            "other": 0,
            "unknown": 0,
            "not_rewritable": 0,
            "stale": 1,
        },
    }
    json.dumps(document)  # serialisable as is


def test_stale_is_null_without_an_expectation() -> None:
    document = to_json(sample(None))
    assert document["expected"] is None
    assert document["summary"]["stale"] is None
    assert all(row["stale"] is None for row in document["resources"])


def test_table_and_summary_line() -> None:
    buffer = io.StringIO()
    print_table(sample(WriteFormat.for_key_id("a")), Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "secrets " in text
    assert "deployments.apps" in text
    assert "a: 1" in text
    assert text.rstrip().endswith(summary_line(sample(WriteFormat.for_key_id("a"))))
    assert "1 stale (expected kms-v2:*:a, from --expect-key-id)" in text


def test_summary_line_without_expectation_says_how_to_get_one() -> None:
    assert "give --expect-key-id or --kubeconfig" in summary_line(sample(None))


def test_markup_in_names_is_printed_literally() -> None:
    inventory = Inventory(None)
    inventory.record(
        ClassifiedObject("k", StoredKey("x.example.com", "[bold]things", None, "n", False, "r"), PLAIN, 1)
    )
    buffer = io.StringIO()
    print_table(inventory, Console(file=buffer, width=200))
    assert "[bold]things.x.example.com" in buffer.getvalue()
