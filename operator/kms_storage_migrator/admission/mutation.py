"""What a write's answer shows that admission changed, against the metadata that was listed. Pure.

Our write pins the listed resourceVersion, so the answer is the listed object after our no-op
patch and admission: any difference in labels, annotations, finalizers or ownerReferences was
made by a mutating webhook (or admission policy) on our write. ``generation`` moves only when
the spec changes, on resources that keep one, so a bump shows a change of spec without seeing
it. What a metadata-only answer cannot show: changes of ConfigMap and Secret data, and of
status. Messages name keys only, never values: an annotation may hold anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kube.py drops this annotation from every answer at parse (it may copy Secret data), so it is
# on neither side of a comparison; named here so a dropped annotation is never a "difference".
IGNORED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
_SHOWN_KEYS = 3


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _canonical(value: object) -> str:
    return json.dumps(value or [], sort_keys=True, default=str)


def _generation(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ListedMetadata:
    """The parts of one object's listed metadata that admission could change on our write."""

    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    finalizers: str = "[]"  # canonical JSON: compared, never shown
    owner_references: str = "[]"
    generation: int | None = None

    @classmethod
    def of(cls, metadata: Mapping[str, Any]) -> ListedMetadata:
        annotations = {
            k: v for k, v in _strings(metadata.get("annotations")).items() if k not in IGNORED_ANNOTATIONS
        }
        return cls(
            labels=tuple(sorted(_strings(metadata.get("labels")).items())),
            annotations=tuple(sorted(annotations.items())),
            finalizers=_canonical(metadata.get("finalizers")),
            owner_references=_canonical(metadata.get("ownerReferences")),
            generation=_generation(metadata.get("generation")),
        )

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def is_object_metadata(answer: Mapping[str, Any]) -> bool:
    """Whether an answer carries the object's metadata (a PartialObjectMetadata), not only a
    resourceVersion (a Table): comparing a Table would report every label as removed."""
    metadata = answer.get("metadata")
    return isinstance(metadata, Mapping) and bool(metadata.get("uid")) and answer.get("kind") != "Table"


def _map_changes(kind: str, before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    changes = []
    for verb, keys in (
        ("added", sorted(after.keys() - before.keys())),
        ("removed", sorted(before.keys() - after.keys())),
        ("changed", sorted(k for k in before.keys() & after.keys() if before[k] != after[k])),
    ):
        if keys:
            shown = ", ".join(keys[:_SHOWN_KEYS]) + (
                f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
            )
            changes.append(f"{kind} {shown} {verb}")
    return changes


def mutations(listed: ListedMetadata, answer: Mapping[str, Any]) -> list[str]:
    """What differs between the listed metadata and the write's answer, one clause each.

    An answer without object metadata (a Table) shows nothing, so it yields no clause.
    """
    if not is_object_metadata(answer):
        return []
    after = ListedMetadata.of(answer["metadata"])
    changes = _map_changes("label", dict(listed.labels), dict(after.labels))
    changes += _map_changes("annotation", dict(listed.annotations), dict(after.annotations))
    if listed.finalizers != after.finalizers:
        changes.append("finalizers changed")
    if listed.owner_references != after.owner_references:
        changes.append("ownerReferences changed")
    if (
        listed.generation is not None
        and after.generation is not None
        and after.generation != listed.generation
    ):
        changes.append(f"generation {listed.generation} -> {after.generation} (its spec changed)")
    return changes
