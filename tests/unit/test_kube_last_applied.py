"""drop_last_applied: kubectl's copy of the applied manifest leaves every parsed answer, nothing else.

Against the real apiserver (a Secret applied with kubectl): tests/integration/test_kube_client.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kms_storage_migrator.kube import LAST_APPLIED_ANNOTATION, _decode, drop_last_applied

APPLIED = '{"apiVersion":"v1","data":{"password":"c2VjcmV0"},"kind":"Secret"}'


def _object(name: str, annotations: dict[str, str] | None, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": "7"}
    if namespace is not None:
        metadata["namespace"] = namespace
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"kind": "PartialObjectMetadata", "metadata": metadata}


@pytest.mark.parametrize(
    ("document", "expected", "dropped"),
    [
        (
            _object("a", {LAST_APPLIED_ANNOTATION: APPLIED, "team": "x"}),
            _object("a", {"team": "x"}),
            ["a"],
        ),
        (_object("a", {LAST_APPLIED_ANNOTATION: APPLIED}), _object("a", {}), ["a"]),
        (_object("a", {"team": "x"}), _object("a", {"team": "x"}), []),
        (_object("a", None), _object("a", None), []),
        (
            {
                "kind": "PartialObjectMetadataList",
                "metadata": {"continue": "tok"},
                "items": [
                    _object("a", {LAST_APPLIED_ANNOTATION: APPLIED}, "ns"),
                    _object("b", None),
                    _object("c", {LAST_APPLIED_ANNOTATION: APPLIED, "k": "v"}),
                    "not an object",
                ],
            },
            {
                "kind": "PartialObjectMetadataList",
                "metadata": {"continue": "tok"},
                "items": [
                    _object("a", {}, "ns"),
                    _object("b", None),
                    _object("c", {"k": "v"}),
                    "not an object",
                ],
            },
            ["ns/a", "c"],
        ),
        # Shapes that are not objects are left alone.
        ({"metadata": "odd"}, {"metadata": "odd"}, []),
        ({"metadata": {"annotations": ["odd"]}}, {"metadata": {"annotations": ["odd"]}}, []),
        ({"items": "odd"}, {"items": "odd"}, []),
    ],
)
def test_only_the_last_applied_annotation_is_dropped(
    document: dict[str, Any], expected: dict[str, Any], dropped: list[str]
) -> None:
    parsed = copy.deepcopy(document)
    assert drop_last_applied(parsed) == dropped
    assert parsed == expected


def test_a_parsed_answer_never_carries_it() -> None:
    answer = json.dumps({"metadata": {"name": "db", "annotations": {LAST_APPLIED_ANNOTATION: APPLIED}}})
    document, dropped = _decode(answer)
    assert (document, dropped) == ({"metadata": {"name": "db", "annotations": {}}}, ["db"])
