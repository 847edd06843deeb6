"""The status command's wiring: flags, which kubeconfig, the CRD path, the kubectl plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kms_storage_migrator import cli
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.statusview import command
from kms_storage_migrator.statusview.model import read_migration
from kms_storage_migrator.statusview.render import summary_line

REPO = Path(__file__).resolve().parents[2]


def test_the_api_path_is_the_crds() -> None:
    crd = yaml.safe_load((REPO / "crds" / "storagemigrations.yaml").read_text())
    spec = crd["spec"]
    served = [version["name"] for version in spec["versions"] if version["served"]]
    assert f"/apis/{spec['group']}/{served[0]}/{spec['names']['plural']}" == command.STORAGE_MIGRATIONS
    assert crd["metadata"]["name"] == command.RESOURCE_NAME


def test_status_is_a_subcommand_of_both_entry_points() -> None:
    args = cli.build_parser().parse_args(["status", "rotate-1", "--watch", "--interval", "0.5"])
    assert (args.command, args.name, args.watch, args.interval) == ("status", "rotate-1", True, 0.5)
    assert args.handler is command.run_status
    plugin = cli.build_parser(prog=cli.KUBECTL_PLUGIN, offered=cli.KUBECTL_PLUGIN_SUBCOMMANDS)
    assert plugin.parse_args(["status"]).name is None


def test_the_kubectl_plugin_offers_only_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.kubectl_plugin(["run"])
    assert raised.value.code == 2
    assert "kubectl storagemigration" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a/b", "Upper", "../secrets", "x-", "x" * 254])
def test_a_name_that_cannot_exist_is_refused(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(["status", name])
    assert raised.value.code == 2
    assert "is not a StorageMigration name" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "4000"])
def test_a_bad_interval_is_refused(interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(["status", "--interval", interval])
    assert raised.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_the_kubeconfig_is_chosen_as_kubectl_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    second.write_text("{}")
    monkeypatch.setattr(command, "DEFAULT_KUBECONFIG", tmp_path / "home-config")
    flag = tmp_path / "flag"
    assert command.resolve_kubeconfig(flag, {"KUBECONFIG": str(second)}) == flag
    # The first file of the list that exists.
    assert command.resolve_kubeconfig(None, {"KUBECONFIG": f"{first}:{second}"}) == second
    (tmp_path / "home-config").write_text("{}")
    assert command.resolve_kubeconfig(None, {}) == tmp_path / "home-config"
    (tmp_path / "home-config").unlink()
    assert command.resolve_kubeconfig(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    with pytest.raises(UserError, match="--kubeconfig"):
        command.resolve_kubeconfig(None, {})


def test_a_watch_line_names_phase_progress_and_counts() -> None:
    view = read_migration(
        {
            "metadata": {"name": "m"},
            "status": {
                "phase": "Migrating",
                "progress": "40%",
                "totals": {"objectsTotal": 10, "rewritten": 3, "unchanged": 1},
                "failuresTotal": 2,
            },
        }
    )
    assert summary_line(view) == "m  Migrating  40%  4/10 objects  2 failed"
    assert summary_line(read_migration({"metadata": {"name": "m"}})) == "m  no phase yet  0 objects  0 failed"
