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


def _object(name: str, annotations: dict[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": "7"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"kind": "PartialObjectMetadata", "metadata": metadata}


@pytest.mark.parametrize(
    ("document", "expected", "dropped"),
    [
        (
            _object("a", {LAST_APPLIED_ANNOTATION: APPLIED, "team": "x"}),
            _object("a", {"team": "x"}),
            1,
        ),
        (_object("a", {LAST_APPLIED_ANNOTATION: APPLIED}), _object("a", {}), 1),
        (_object("a", {"team": "x"}), _object("a", {"team": "x"}), 0),
        (_object("a", None), _object("a", None), 0),
        (
            {
                "kind": "PartialObjectMetadataList",
                "metadata": {"continue": "tok"},
                "items": [
                    _object("a", {LAST_APPLIED_ANNOTATION: APPLIED}),
                    _object("b", None),
                    _object("c", {LAST_APPLIED_ANNOTATION: APPLIED, "k": "v"}),
                    "not an object",
                ],
            },
            {
                "kind": "PartialObjectMetadataList",
                "metadata": {"continue": "tok"},
                "items": [_object("a", {}), _object("b", None), _object("c", {"k": "v"}), "not an object"],
            },
            2,
        ),
        # Shapes that are not objects are left alone.
        ({"metadata": "odd"}, {"metadata": "odd"}, 0),
        ({"metadata": {"annotations": ["odd"]}}, {"metadata": {"annotations": ["odd"]}}, 0),
        ({"items": "odd"}, {"items": "odd"}, 0),
    ],
)
def test_only_the_last_applied_annotation_is_dropped(
    document: dict[str, Any], expected: dict[str, Any], dropped: int
) -> None:
    parsed = copy.deepcopy(document)
    assert drop_last_applied(parsed) == dropped
    assert parsed == expected


def test_a_parsed_answer_never_carries_it() -> None:
    answer = json.dumps({"metadata": {"annotations": {LAST_APPLIED_ANNOTATION: APPLIED}}})
    document, dropped = _decode(answer)
    assert (document, dropped) == ({"metadata": {"annotations": {}}}, 1)
