"""``kms-storage-migrator dev-cluster up|down|status|encrypt|rotate-kek|build``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kms_storage_migrator.devcluster import binaries, node
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.encryption import EncryptionMode
from kms_storage_migrator.devcluster.seed import seed
from kms_storage_migrator.errors import UserError

DEFAULT_DIRECTORY = Path(".devcluster")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-cluster",
        help="run a local control plane (etcd, KMS v2 plugin, kube-apiserver) for trying and testing",
        description="A local control plane built from Go modules: real etcd, a real kube-apiserver "
        "and this project's KMS v2 plugin, on loopback with TLS.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIRECTORY,
            help=f"directory holding the cluster's state (default: {DEFAULT_DIRECTORY})",
        )
        return sub

    up = action("up", "build what is missing, start the cluster, return once it is ready")
    up.add_argument(
        "--encryption",
        choices=[mode.value for mode in EncryptionMode],
        default=EncryptionMode.KMS.value,
        help="kms: write through KMS v2 (default); none: store plaintext, like a legacy cluster",
    )
    up.add_argument(
        "--apiservers",
        type=int,
        default=1,
        metavar="N",
        help="run N kube-apiservers on the one etcd, each with its own KMS plugin and host name, "
        "behind HAProxy; DIR/kubeconfig then points at HAProxy (default: 1)",
    )
    up.add_argument(
        "--port",
        type=int,
        help="the port DIR/kubeconfig names: kube-apiserver's, or HAProxy's (default: free)",
    )
    up.add_argument("--etcd-port", type=int, help="etcd client port (default: a free one)")
    up.add_argument(
        "--controller-manager",
        action="store_true",
        help="also run kube-controller-manager (namespace deletion, garbage collection)",
    )
    up.add_argument(
        "--kms-endpoint",
        metavar="unix:///PATH",
        help="use this external KMS v2 plugin instead of the bundled one (try the plugin your cluster "
        "runs: start with --encryption none, then `encrypt`)",
    )
    up.add_argument(
        "--kms-provider-name",
        metavar="NAME",
        help="the provider name for --kms-endpoint in the encryption configuration",
    )
    up.add_argument(
        "--node",
        action="store_true",
        help="also run a real node (containerd, kubelet, kube-scheduler and the controllers Deployments "
        "need) so the chart's pods run; needs root, builds kubelet and containerd on first use",
    )
    audit = up.add_mutually_exclusive_group()
    audit.add_argument(
        "--audit-log",
        action="store_true",
        help="write each apiserver's audit log, every request and response, to DIR/apiserver-N/audit.log",
    )
    audit.add_argument(
        "--audit-policy", type=Path, metavar="FILE", help="like --audit-log, with this audit Policy file"
    )
    up.set_defaults(handler=_up)
    action("down", "stop every component (data and logs stay in --dir)").set_defaults(handler=_down)
    status = action("status", "components, ports, PIDs and the current key id")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.set_defaults(handler=_status)
    action("encrypt", "switch a plaintext cluster to KMS v2 and restart the apiserver").set_defaults(
        handler=_encrypt
    )
    rotate = action(
        "rotate-kek",
        "make a new primary KEK; each apiserver switches at its next KMS Status poll (about a minute)",
    )
    rotate.add_argument(
        "--restart", action="store_true", help="restart the apiservers so they write with the new KEK at once"
    )
    rotate.set_defaults(handler=_rotate)
    seed = action("seed", "create CRDs and a mix of objects (core, apps, RBAC, custom resources)")
    seed.add_argument("--objects", type=int, default=3000, help="how many objects (default: 3000)")
    seed.add_argument("--namespaces", type=int, default=20, help="spread over this many namespaces")
    seed.set_defaults(handler=_seed)
    node_parser = action("node", "work with the node of a cluster started with `up --node`")
    node_actions = node_parser.add_subparsers(dest="node_action", required=True, metavar="NODE_ACTION")
    import_image = node_actions.add_parser(
        "import-image",
        help="import an OCI archive (podman save --format oci-archive) into the node's containerd",
        description="Import an image archive into the node's containerd (namespace k8s.io), so pods "
        "with imagePullPolicy: Never run it; no registry is needed.",
    )
    import_image.add_argument("archive", type=Path, metavar="FILE")
    import_image.set_defaults(handler=_import_image)
    build = actions.add_parser("build", help="build (or find cached) every dev-cluster binary")
    build.add_argument("names", nargs="*", default=list(binaries.ALL_BINARIES), metavar="NAME")
    build.set_defaults(handler=_build)


def _up(args: argparse.Namespace) -> int:
    cluster = DevCluster(args.dir)
    cluster.up(
        args.encryption,
        with_controller_manager=args.controller_manager,
        apiserver_port=args.port,
        etcd_port=args.etcd_port,
        apiservers=args.apiservers,
        kms_endpoint=args.kms_endpoint,
        kms_provider_name=args.kms_provider_name,
        audit_policy=args.audit_policy,
        audit_log=args.audit_log,
        with_node=args.node,
    )
    print(f"dev cluster ready in {cluster.directory} (encryption: {args.encryption})")
    apiservers = cluster.apiservers
    if len(apiservers) > 1:
        print(f"  load balancer:  {cluster.api_url} (HAProxy)")
    for apiserver in apiservers:
        print(f"  {apiserver.component + ':':<16}{apiserver.url}  (kubeconfig: {apiserver.kubeconfig})")
    print(f"  etcd:           {cluster.etcd_endpoint}  (client config: {cluster.etcd_config})")
    if args.kms_endpoint:
        print(f"  KMS provider:   {cluster.provider_name}, external plugin {args.kms_endpoint}")
    else:
        print(f"  KMS provider:   {cluster.provider_name}, primary key {cluster.current_key_id()}")
    if args.node:
        print(f"  node:           {node.NODE_NAME} (containerd {cluster.node_layout.containerd_socket})")
        print(f"  images:         kms-storage-migrator dev-cluster node --dir {args.dir} import-image FILE")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  kms-storage-migrator scan --etcd-config {cluster.etcd_config}")
    return 0


def _down(args: argparse.Namespace) -> int:
    DevCluster(args.dir).down()
    print(f"dev cluster in {args.dir} stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = DevCluster(args.dir).status()
    if args.output == "json":
        print(json.dumps(status, indent=2))
        return 0
    key = status["currentKeyId"] or f"external plugin {status['kmsEndpoint']}"
    print(f"directory:  {status['directory']}")
    print(f"encryption: {status['encryption']} (provider {status['provider']}, primary key {key})")
    if status["loadBalancer"]:
        print(f"front door: {status['loadBalancer']} (HAProxy)")
    print("apiservers:")
    for apiserver in status["apiservers"]:
        running = "running" if apiserver["running"] else "stopped"
        writes = apiserver["writeKeyId"] or apiserver["writeKeyIdHash"] or "-"
        pid = apiserver["pid"] or "-"
        print(
            f"  {apiserver['index']}  port {apiserver['port']:<6} pid {pid!s:<8} {running:<8} "
            f"writes with {writes}  ({apiserver['identityLease']})"
        )
    print("components:")
    for component, details in status["components"].items():
        running = {True: "running", False: "stopped"}.get(details.get("running"), "")
        where = details.get("port") or details.get("socket") or ""
        print(f"  {component:<24} {running:<8} pid {details.get('pid', '-')!s:<8} {where}")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    cluster = DevCluster(args.dir)
    cluster.encrypt()
    print(f"kube-apiserver now writes through KMS v2 with key {cluster.current_key_id()}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    new_key_id = DevCluster(args.dir).rotate_kek(restart=args.restart)
    if args.restart:
        print(f"new primary KEK {new_key_id}; the apiservers restarted and write with it")
    else:
        print(
            f"new primary KEK {new_key_id}; each apiserver writes with it after its next KMS Status poll "
            "(within about a minute; `dev-cluster status` shows which key each one writes with)"
        )
    return 0


def _seed(args: argparse.Namespace) -> int:
    if args.objects < 1 or args.namespaces < 1:
        raise UserError("--objects and --namespaces must be at least 1")
    created = seed(DevCluster(args.dir), args.objects, args.namespaces)
    print(f"created {created} objects in {args.namespaces} namespaces")
    return 0


def _import_image(args: argparse.Namespace) -> int:
    DevCluster(args.dir).import_image(args.archive)
    print(f"imported {args.archive} into the node's containerd (namespace {node.CONTAINERD_NAMESPACE})")
    return 0


def _build(args: argparse.Namespace) -> int:
    for name in args.names:
        print(f"{name}: {binaries.binary_path(name)}")
    return 0
