"""The node's pure parts: rendered configs, the pause image, which iptables rules and mounts are
ours; and the clear errors `up --node` gives before it touches the host."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from kms_storage_migrator.devcluster import node
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.errors import UserError

LAYOUT = node.NodeLayout(Path("/tmp/pytest-of-root/pytest-12/test_node0/a-rather-deep/cluster"), Path("/n"))

# `iptables -t filter -S` as kubelet 1.37 left it on this VM, plus a rule of someone else's.
FILTER_LISTING = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N KUBE-FIREWALL
-N KUBE-KUBELET-CANARY
-N OTHER
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp --dport 22 -j OTHER
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" \
-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
"""
NAT_LISTING = """\
-P PREROUTING ACCEPT
-N KUBE-KUBELET-CANARY
-A PREROUTING -s 10.244.0.0/24 -d 10.0.0.1/32 -p tcp -m tcp --dport 443 -m comment --comment \
"kms-storage-migrator dev node: pods to the apiserver" -j DNAT --to-destination 127.0.0.1:42613
-A PREROUTING -d 10.9.9.9/32 -j DNAT --to-destination 127.0.0.1:80
"""


def test_containerd_config_is_valid_toml_with_the_settings_this_vm_needs() -> None:
    config = tomllib.loads(node.containerd_config(LAYOUT))

    assert config["version"] == 3
    assert config["grpc"]["address"] == "/n/containerd/containerd.sock"
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    # Without it every sandbox fails here: the VM drops CAP_SYS_RESOURCE (docs/dev-cluster.md).
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    options = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert options == {"BinaryName": "/usr/sbin/runc", "Root": "/n/runc", "SystemdCgroup": False}
    assert runtime["cni"]["conf_dir"] == str(LAYOUT.directory / "node" / "cni")
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == node.PAUSE_IMAGE


def test_every_node_state_path_is_under_the_node_root_and_sockets_fit() -> None:
    layout = node.NodeLayout.for_cluster(Path("/tmp/" + "deep/" * 40 + "cluster"))

    assert layout.root.parent == node.NODE_ROOT_PARENT
    for path in (layout.containerd_root, layout.containerd_state, layout.kubelet_root, layout.pod_logs):
        assert path.is_relative_to(layout.root)
    # Unix socket paths are limited to 107 bytes; the kubelet adds ~40 under its root.
    assert len(str(layout.containerd_socket)) < 80
    assert len(str(layout.kubelet_root)) < 60
    # Two clusters get two roots; one cluster always the same one (down finds it).
    assert node.NodeLayout.for_cluster(Path("/a")).root != node.NodeLayout.for_cluster(Path("/b")).root
    assert node.NodeLayout.for_cluster(Path("/a")) == node.NodeLayout.for_cluster(Path("/a"))


def test_cni_config_puts_the_gateway_on_the_node_ip_without_masquerade() -> None:
    config = json.loads(node.cni_conflist(LAYOUT))

    (bridge,) = config["plugins"]
    assert bridge["bridge"] == node.BRIDGE
    assert bridge["isGateway"] is True
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.POD_SUBNET, "gateway": node.NODE_IP}]]
    assert bridge["ipam"]["dataDir"] == "/n/cni-ipam"


def test_kubelet_config_runs_on_cgroup_v1_and_serves_only_authenticated_clients() -> None:
    config = yaml.safe_load(
        node.kubelet_config(LAYOUT, port=4100, healthz_port=4101, client_ca=Path("/ca.crt"))
    )

    assert config["kind"] == "KubeletConfiguration"
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == "unix:///n/containerd/containerd.sock"
    assert config["podLogsDir"] == "/n/pod-logs"
    assert (config["address"], config["port"], config["readOnlyPort"]) == (node.NODE_IP, 4100, 0)
    assert (config["healthzBindAddress"], config["healthzPort"]) == ("127.0.0.1", 4101)
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"] == {"clientCAFile": "/ca.crt"}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["evictionHard"] == {}


def test_dnat_rule_sends_the_kubernetes_service_address_to_the_apiserver_port() -> None:
    rule = node.dnat_rule(42613)

    assert rule[rule.index("-s") + 1] == node.POD_SUBNET
    assert rule[rule.index("-d") + 1] == "10.0.0.1/32"
    assert rule[rule.index("--dport") + 1] == "443"
    assert rule[rule.index("--to-destination") + 1] == "127.0.0.1:42613"
    assert node.DNAT_COMMENT in rule


def test_rules_to_delete_finds_the_kubelet_jumps_and_leaves_other_rules() -> None:
    deletions = node.rules_to_delete(FILTER_LISTING, jump_targets=node.KUBELET_CHAINS["filter"])

    assert deletions == [["-D", "INPUT", "-j", "KUBE-FIREWALL"], ["-D", "OUTPUT", "-j", "KUBE-FIREWALL"]]
    assert node.chains_in(FILTER_LISTING) == {"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "OTHER"}


def test_rules_to_delete_finds_our_dnat_rule_by_its_comment_only() -> None:
    (deletion,) = node.rules_to_delete(NAT_LISTING, jump_targets=(), comment=node.DNAT_COMMENT)

    assert deletion[:2] == ["-D", "PREROUTING"]
    # The quoted comment comes back as one argument, so the rule is deleted exactly as listed.
    assert node.DNAT_COMMENT in deletion
    assert deletion[-1] == "127.0.0.1:42613"


def test_pause_image_archive_is_a_valid_oci_layout_named_for_containerd() -> None:
    program = b"\x7fELF pretend static binary"
    archive = node.pause_image_archive(program)
    files = _untar(archive)

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == node.PAUSE_IMAGE
    manifest_blob = _blob(files, entry["digest"])
    assert len(manifest_blob) == entry["size"]
    manifest = json.loads(manifest_blob)
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    (layer_descriptor,) = manifest["layers"]
    layer = _blob(files, layer_descriptor["digest"])
    # An uncompressed layer: its digest is also its diff id.
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as layer_tar:
        member = layer_tar.getmember("pause")
        assert member.mode == 0o755
        extracted = layer_tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == program
    # Deterministic: the same program gives the same archive (and image digest).
    assert node.pause_image_archive(program) == archive


def _untar(archive: bytes) -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            files[member.name] = extracted.read()
    return files


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    blob = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest
    return blob


def test_mount_points_under_the_roots_deepest_first_unescaped() -> None:
    mountinfo = "\n".join(
        [
            "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
            "30 22 0:50 / /n/containerd/state/a/rootfs rw shared:2 - overlay overlay rw",
            "31 22 0:51 / /n/kubelet/pods/x/volumes/kube-api-access rw - tmpfs tmpfs rw",
            r"32 22 0:52 / /n/with\040space rw - tmpfs tmpfs rw",
            "33 22 0:53 / /nother rw - tmpfs tmpfs rw",
            "34 22 0:54 / /run/containerd/x rw - tmpfs tmpfs rw",
        ]
    )

    points = node.mount_points_under(mountinfo, [Path("/n"), Path("/run/containerd")])

    assert points == [
        "/n/kubelet/pods/x/volumes/kube-api-access",
        "/n/containerd/state/a/rootfs",
        "/run/containerd/x",
        "/n/with space",
    ]


def test_up_with_node_needs_root_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)

    with pytest.raises(UserError, match=r"--node needs root.*sudo"):
        DevCluster(tmp_path / "c").up(with_node=True)
    assert not (tmp_path / "c").exists()  # refused before anything was made


def test_up_with_node_refuses_several_apiservers(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--node runs with one apiserver"):
        DevCluster(tmp_path / "c").up(with_node=True, apiservers=3)


def test_import_image_into_a_cluster_without_node_names_the_fix(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "c")
    cluster.directory.mkdir()
    cluster.state_path.write_text('{"apiserver_port": 1}')

    with pytest.raises(UserError, match=r"has no node: start it with `up --node`"):
        cluster.import_image(tmp_path / "image.tar")
