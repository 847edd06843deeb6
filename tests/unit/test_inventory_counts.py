"""Aggregation: staleness per expectation, the per-resource columns, and the summary."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kms_storage_migrator.inventory.counts import ClassifiedObject, Inventory, ResourceCounts
from kms_storage_migrator.inventory.scan import classify_page, rewritable_flags, tally_page
from kms_storage_migrator.storage.etcd import RawEntry
from kms_storage_migrator.storage.formats import (
    DEK_SOURCE_AES_GCM_KEY,
    DEK_SOURCE_HKDF_SEED,
    FormatKind,
    StoredFormat,
)
from kms_storage_migrator.storage.keys import EtcdRoot, GroupResource, StoredKey, parse_key
from kms_storage_migrator.storage.write_format import WriteFormat

PLAIN = StoredFormat(FormatKind.PLAINTEXT_PROTOBUF)
JSON = StoredFormat(FormatKind.PLAINTEXT_JSON)
KEY_A = StoredFormat(
    FormatKind.KMS_V2, provider="local-kms", key_id="a", dek_source_type=DEK_SOURCE_HKDF_SEED
)
KEY_B = StoredFormat(
    FormatKind.KMS_V2, provider="local-kms", key_id="b", dek_source_type=DEK_SOURCE_HKDF_SEED
)
KEY_B_LEGACY_DEK = StoredFormat(
    FormatKind.KMS_V2, provider="local-kms", key_id="b", dek_source_type=DEK_SOURCE_AES_GCM_KEY
)
KEY_B_OTHER_PROVIDER = StoredFormat(
    FormatKind.KMS_V2, provider="other-kms", key_id="b", dek_source_type=DEK_SOURCE_HKDF_SEED
)
AESCBC = StoredFormat(FormatKind.AESCBC, key_name="key1")
KMS_V1 = StoredFormat(FormatKind.KMS_V1, provider="vault")
UNKNOWN = StoredFormat(FormatKind.UNKNOWN, reason="no known prefix")

SECRET = StoredKey("", "secrets", "ns", "s", True)
RANGE = StoredKey("", "ranges", None, "serviceips", False, "no API serves it")


def obj(stored: StoredFormat, key: StoredKey = SECRET) -> ClassifiedObject:
    return ClassifiedObject("/registry/secrets/ns/s", key, stored, 7)


class TestStaleness:
    expect_b = WriteFormat.for_key_id("b", provider="local-kms")

    @pytest.mark.parametrize(
        "stored", [PLAIN, JSON, KEY_A, KEY_B_LEGACY_DEK, KEY_B_OTHER_PROVIDER, AESCBC, KMS_V1, UNKNOWN]
    )
    def test_anything_but_the_current_key_is_stale(self, stored: StoredFormat) -> None:
        assert obj(stored).is_stale(self.expect_b)

    def test_current_key_is_not_stale(self) -> None:
        assert not obj(KEY_B).is_stale(self.expect_b)

    def test_not_rewritable_is_never_stale(self) -> None:
        assert not obj(PLAIN, RANGE).is_stale(self.expect_b)

    def test_key_id_alone_matches_any_provider(self) -> None:
        assert not obj(KEY_B_OTHER_PROVIDER).is_stale(WriteFormat.for_key_id("b"))

    def test_plaintext_expectation_accepts_every_plaintext_serialization(self) -> None:
        identity = WriteFormat(PLAIN, "canary")
        assert not obj(JSON).is_stale(identity)
        assert not obj(StoredFormat(FormatKind.PLAINTEXT_CBOR)).is_stale(identity)
        assert obj(KEY_B).is_stale(identity)

    def test_aes_expectation_compares_key_names(self) -> None:
        expect = WriteFormat(AESCBC, "canary")
        assert not obj(StoredFormat(FormatKind.AESCBC, key_name="key1")).is_stale(expect)
        assert obj(StoredFormat(FormatKind.AESCBC, key_name="key2")).is_stale(expect)
        assert obj(StoredFormat(FormatKind.AESGCM, key_name="key1")).is_stale(expect)


def test_columns_partition_the_total() -> None:
    inventory = Inventory(WriteFormat.for_key_id("b"))
    for stored in (PLAIN, PLAIN, KEY_A, KEY_B, KEY_B, AESCBC, KMS_V1, UNKNOWN):
        inventory.record(obj(stored))
    inventory.record(obj(PLAIN, RANGE))
    secrets = inventory.resources[GroupResource("", "secrets")]
    assert secrets == ResourceCounts(
        "",
        "secrets",
        total=8,
        plaintext=2,
        kmsv2={"a": 1, "b": 2},
        other=2,
        unknown=1,
        not_rewritable=0,
        stale=6,
    )
    ranges = inventory.resources[GroupResource("", "ranges")]
    assert (ranges.total, ranges.plaintext, ranges.not_rewritable, ranges.stale) == (1, 1, 1, 0)
    assert inventory.stale == 6


def test_without_an_expectation_nothing_is_stale() -> None:
    inventory = Inventory(None)
    inventory.record(obj(PLAIN))
    assert inventory.stale == 0


def test_rows_are_sorted_by_group_then_resource() -> None:
    inventory = Inventory(None)
    for group, resource in (
        ("apps", "deployments"),
        ("", "secrets"),
        ("", "configmaps"),
        ("apps", "daemonsets"),
    ):
        inventory.record(obj(PLAIN, StoredKey(group, resource, "ns", "x", True)))
    assert [(r.group, r.resource) for r in inventory.rows()] == [
        ("", "configmaps"),
        ("", "secrets"),
        ("apps", "daemonsets"),
        ("apps", "deployments"),
    ]


formats = st.sampled_from([PLAIN, JSON, KEY_A, KEY_B, KEY_B_LEGACY_DEK, AESCBC, KMS_V1, UNKNOWN])
keys = st.sampled_from([SECRET, RANGE, StoredKey("apps", "deployments", "ns", "d", True)])


@given(st.lists(st.tuples(formats, keys), max_size=60))
def test_summary_is_the_sum_of_the_rows(objects: list[tuple[StoredFormat, StoredKey]]) -> None:
    inventory = Inventory(WriteFormat.for_key_id("b"))
    for stored, key in objects:
        inventory.record(obj(stored, key))
    summary = inventory.summary
    rows = inventory.rows()
    assert summary.total == len(objects) == sum(r.total for r in rows)
    for counts in [summary, *rows]:
        assert counts.total == counts.plaintext + sum(counts.kmsv2.values()) + counts.other + counts.unknown
    assert summary.stale == inventory.stale == sum(r.stale for r in rows)
    assert summary.not_rewritable == sum(1 for _, key in objects if not key.rewritable)


# A scan tallies each page in bulk (runs of neighbouring keys share one parse_key); that must count
# exactly what recording every object one by one counts, whatever the keys look like.
page_keys = st.one_of(
    st.sampled_from(
        [
            b"/registry/secrets/ns/a",
            b"/registry/secrets/ns/b",
            b"/registry/secrets/ns2/a",
            b"/registry/secrets/ns/",
            b"/registry/secrets/a",
            b"/registry/secrets//a",
            b"/registry/secrets//b",
            b"/registry//secrets/ns/a",
            b"/registry//secrets/ns/b",
            b"/registry/secrets/ns/deeper/a",
            b"/registry/secrets/ns/n\xc3\xa9",
            b"/registry/secrets/ns/\xff",
            b"/registry/services/specs/ns/a",
            b"/registry/services/specs/a",
            b"/registry/ranges/serviceips",
            b"/registry/ranges/a/b",
            b"/registry/namespaces/ns",
            b"/registry/example.com/widgets/ns/a",
            b"/registry/example.com/widgets/ns/b",
            b"/registry/example.com/widgets/a",
            b"/registry/example.com/gadgets/a",
            b"/registry/example.com/gadgets/ns/a",
            b"/registry/other.example.com/gadgets/a",
            b"/registry/nothing-here/a",
            b"/registry/a",
            b"/registryx/secrets/ns/a",
            b"/other/secrets/ns/a",
            b"",
        ]
    ),
    st.binary(max_size=24).map(lambda tail: b"/registry/secrets/" + tail),
)
page_values = st.sampled_from(
    [
        b"k8s\x00plaintext",
        b"{}",
        b"k8s:enc:kms:v2:local-kms:\n\x01x\x12\x01a\x1a\x01d(\x01",
        b"k8s:enc:kms:v2:local-kms:\n\x02xy\x12\x01a\x1a\x01d(\x01",
        b"k8s:enc:kms:v2:local-kms:\n\x01x\x12\x01b\x1a\x01d(\x01",
        b"k8s:enc:aescbc:v1:key1:ciphertext",
        b"garbage",
        b"",
    ]
)


@given(st.lists(st.tuples(page_keys, page_values), max_size=40), st.sampled_from(["/registry", ""]))
@example([(b"/registry/secrets//a", b"{}"), (b"/registry/secrets//b", b"{}")], "/registry")
@example([(b"/registry//secrets/ns/a", b"{}"), (b"/registry//secrets/ns/b", b"{}")], "/registry")
@example([(b"/registry/secrets/ns/a", b"{}"), (b"/registry/secrets/ns/\xff", b"{}")], "/registry")
@example([(b"/registry/secrets/ns/a", b"{}"), (b"/registry/secrets/ns/a/b", b"{}")], "/registry")
@example([(b"/registry/a", b"{}"), (b"/registry/b", b"{}")], "/registry")
@example([(b"/registry/secrets/", b"{}"), (b"/registry/secrets/a", b"{}")], "/registry")
def test_a_page_tallied_in_bulk_counts_like_each_object_recorded(
    page: list[tuple[bytes, bytes]], root_path: str
) -> None:
    root = EtcdRoot(root_path)
    page.sort()  # etcd returns keys in order
    index = {("example.com", "widgets"): True, ("example.com", "gadgets"): None}
    one_by_one = Inventory(WriteFormat.for_key_id("a"))
    raw = [RawEntry(key, value, 1) for key, value in page]
    for classified in classify_page(raw, index, root=root):
        one_by_one.record(classified)
    in_bulk = Inventory(WriteFormat.for_key_id("a"))
    tally_page(page, index, in_bulk, root=root)
    assert in_bulk.resources == one_by_one.resources
    assert list(in_bulk.resources) == list(one_by_one.resources)  # first seen, first listed


@given(st.lists(page_keys, max_size=40), st.sampled_from(["/registry", ""]))
@example([b"/registry/secrets//a", b"/registry/secrets//b"], "/registry")
@example([b"/registry/secrets/ns/a", b"/registry/secrets/ns/\xff"], "/registry")
@example([b"/registry/secrets/ns/a", b"/registry/secrets/ns/a/b"], "/registry")
@example([b"/registry/secrets/", b"/registry/secrets/a"], "/registry")
def test_rewritable_flags_of_sorted_keys_agree_with_parse_key_on_each_key(
    keys: list[bytes], root_path: str
) -> None:
    root = EtcdRoot(root_path)
    keys.sort()  # etcd returns keys in order
    index = {("example.com", "widgets"): True, ("example.com", "gadgets"): None}
    one_by_one = [parse_key(key, index, root=root).rewritable for key in keys]
    assert rewritable_flags(keys, index, root=root) == one_by_one
