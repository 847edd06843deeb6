"""The Helm chart ships the StorageMigration CRD in its crds/ folder; it must be the project's CRD.

Helm installs charts/kms-storage-migrator/crds/ verbatim and never templates or upgrades it, so
a copy that drifts from crds/ would install an old schema silently. Byte equality is the check:
any edit to crds/storagemigrations.yaml has to be copied into the chart in the same change.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT_CRDS = REPO / "crds"
CHART_CRDS = REPO / "charts" / "kms-storage-migrator" / "crds"


def _yaml_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.yaml"))


def test_chart_ships_the_storagemigration_crd() -> None:
    assert (CHART_CRDS / "storagemigrations.yaml").is_file(), (
        f"copy crds/storagemigrations.yaml into {CHART_CRDS.relative_to(REPO)}/"
    )


def test_chart_crds_are_the_same_files_as_the_project_crds() -> None:
    assert _yaml_files(CHART_CRDS) == _yaml_files(PROJECT_CRDS)


def test_chart_crds_are_byte_identical_to_the_project_crds() -> None:
    for name in _yaml_files(PROJECT_CRDS):
        project_bytes = (PROJECT_CRDS / name).read_bytes()
        chart_bytes = (CHART_CRDS / name).read_bytes()
        assert chart_bytes == project_bytes, (
            f"charts/kms-storage-migrator/crds/{name} differs from crds/{name}: "
            f"run `cp crds/{name} charts/kms-storage-migrator/crds/`"
        )
