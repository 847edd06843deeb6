"""The Full walk's targets carry what the list showed of each object's metadata.

The mutation guard (admission/mutation.py) matches webhook selectors on those labels and compares
a write's answer with them; a target without them is one it can only treat as unknown.
"""

from __future__ import annotations

from typing import Any

from kms_storage_migrator.migration.full_walk import FullWalk
from kms_storage_migrator.migration.progress import MigrationProgress, ResourceProgress
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import NoObserver

SECRETS = ServedResource("", "v1", "secrets", "Secret", namespaced=True)


class OnePageApi:
    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        metadata = {
            "namespace": "ns",
            "name": "s1",
            "resourceVersion": "9",
            "uid": "u1",
            "labels": {"app": "web"},
            "annotations": {"team": "a"},
            "generation": 3,
        }
        return {"metadata": {"continue": ""}, "items": [{"metadata": metadata}]}

    async def get_json(self, path: str) -> dict[str, Any]:
        raise AssertionError("not read")

    async def patch(
        self, path: str, body: Any, *, content_type: str = "", params: Any = None
    ) -> dict[str, Any]:
        raise AssertionError("not written")


async def test_targets_carry_the_listed_labels_annotations_and_generation() -> None:
    walk = FullWalk(OnePageApi(), AdaptiveRateLimiter(100), NoObserver(), MigrationProgress(), page_size=10)
    pages = [page async for page in walk.pages(ResourceProgress("", "v1", "secrets"), SECRETS)]

    [target] = pages[0].targets
    assert (target.name, target.resource_version, target.uid) == ("s1", "9", "u1")
    assert target.listed is not None
    assert target.listed.label_map == {"app": "web"}
    assert dict(target.listed.annotations) == {"team": "a"}
    assert target.listed.generation == 3
