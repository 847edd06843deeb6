"""``kms-storage-migrator run``: the operator (kopf, standalone, cluster-wide).

One replica, or several with ``--leader-elect``: then only the holder of a Lease runs kopf.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from kms_storage_migrator.auto_migrate.loop import DEFAULT_INTERVAL_SECONDS, beside_operator
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.scan import require_apiserver_keys
from kms_storage_migrator.kube import KubeApi, load_credentials
from kms_storage_migrator.leader import DEFAULT_LEASE_NAME, REQUEST_TIMEOUT_SECONDS, lead, lease_settings
from kms_storage_migrator.migration.metrics import OperatorMetrics
from kms_storage_migrator.migration.plan import DEFAULT_CONCURRENCY, DEFAULT_QPS, RunDefaults
from kms_storage_migrator.migration.service import OperatorContext
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import EtcdRoot

DEFAULT_METRICS_PORT = 9090
AUTO_MIGRATE_ENV = "KMS_STORAGE_MIGRATOR_AUTO_MIGRATE"
_SWITCH = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
ETCD_FLAGS = ("etcd_config", "etcd_endpoints", "etcd_cacert", "etcd_cert", "etcd_key")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator: watch StorageMigrations and migrate",
        description=(
            "Run the operator. Credentials come from --kubeconfig, else from the in-cluster "
            "service account. With etcd access (--etcd-config or --etcd-*), migrations rewrite "
            "only stale objects and verify the result by reading etcd back. With --leader-elect, "
            "several replicas may run: only the holder of a Lease migrates."
        ),
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=_env_path("KUBECONFIG"),
        help="kubeconfig file (env KUBECONFIG; default: in-cluster service account)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=_env("KMS_STORAGE_MIGRATOR_METRICS_PORT", DEFAULT_METRICS_PORT),
        help=f"Prometheus metrics port, 0 to disable (env KMS_STORAGE_MIGRATOR_METRICS_PORT; "
        f"default {DEFAULT_METRICS_PORT})",
    )
    parser.add_argument(
        "--health-port",
        type=_port,
        default=_env("KMS_STORAGE_MIGRATOR_HEALTH_PORT", 0),
        help="serve kopf's liveness probe on http://0.0.0.0:PORT/healthz "
        "(env KMS_STORAGE_MIGRATOR_HEALTH_PORT; default: off)",
    )
    parser.add_argument(
        "--concurrency",
        type=_at_least_one,
        default=_env("KMS_STORAGE_MIGRATOR_CONCURRENCY", DEFAULT_CONCURRENCY),
        help="parallel writes when a spec does not say "
        f"(env KMS_STORAGE_MIGRATOR_CONCURRENCY; default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--qps",
        type=_at_least_one,
        default=_env("KMS_STORAGE_MIGRATOR_QPS", DEFAULT_QPS),
        help=f"requests per second when a spec does not say (env KMS_STORAGE_MIGRATOR_QPS; "
        f"default {DEFAULT_QPS})",
    )
    EtcdConfig.add_arguments(parser, prefix_env="KMS_STORAGE_MIGRATOR_ETCD_PREFIX")
    parser.add_argument(
        "--auto-migrate",
        action="store_true",
        default=os.environ.get(AUTO_MIGRATE_ENV, ""),
        help="create a StorageMigration by itself when the apiservers switch to a new KMS key, and "
        "at start when etcd holds objects under an older key (with etcd access); needs create on "
        f"storagemigrations (env {AUTO_MIGRATE_ENV}=true; default: off)",
    )
    parser.add_argument(
        "--auto-migrate-interval",
        type=_at_least_one,
        default=_env("KMS_STORAGE_MIGRATOR_AUTO_MIGRATE_INTERVAL", int(DEFAULT_INTERVAL_SECONDS)),
        metavar="SECONDS",
        help="how often --auto-migrate checks the apiservers' key (env "
        f"KMS_STORAGE_MIGRATOR_AUTO_MIGRATE_INTERVAL; default {DEFAULT_INTERVAL_SECONDS:.0f})",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding a coordination.k8s.io Lease, so replicas can stand by "
        "(exits with status 3 if the Lease is lost; default: off, one replica)",
    )
    parser.add_argument(
        "--leader-elect-namespace",
        metavar="NAMESPACE",
        help="namespace of the Lease (default: $POD_NAMESPACE, else the ServiceAccount's namespace)",
    )
    parser.add_argument(
        "--leader-elect-name",
        metavar="NAME",
        default=DEFAULT_LEASE_NAME,
        help=f"name of the Lease (default {DEFAULT_LEASE_NAME})",
    )
    parser.set_defaults(handler=run, etcd_config=_env_path("KMS_STORAGE_MIGRATOR_ETCD_CONFIG"))


def _env(name: str, fallback: int) -> str:
    # A string default goes through the argument's type check, so a bad value in the
    # environment is reported like a bad flag instead of crashing the parser.
    return os.environ.get(name) or str(fallback)


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _at_least_one(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def switch(value: bool | str, name: str) -> bool:
    """A flag given as a flag (True) or through the environment (``true``/``false``...)."""
    if isinstance(value, bool):
        return value
    parsed = _SWITCH.get(value.strip().lower())
    if parsed is None:
        raise UserError(f"{name}={value!r}: expected true or false")
    return parsed


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def run(args: argparse.Namespace) -> int:
    # kopf (imported by handlers.py only) configures logging on import: only `run` needs it.
    from kms_storage_migrator.handlers import OperatorMemo, operate  # noqa: PLC0415

    # A Lease without a namespace is bad input: refuse it before anything starts.
    lease = (
        lease_settings(args.leader_elect_namespace, args.leader_elect_name, os.environ)
        if args.leader_elect
        else None
    )
    auto_migrate = switch(args.auto_migrate, AUTO_MIGRATE_ENV)
    etcd_config = None
    if any(getattr(args, flag) is not None for flag in ETCD_FLAGS):
        etcd_config = EtcdConfig.from_args(args)
        # Fail now with one line, not later inside kopf's startup handler, which retries forever.
        asyncio.run(_check_etcd(etcd_config, args.etcd_prefix))
    credentials = load_credentials(args.kubeconfig)  # blocking, before the event loop exists
    metrics = OperatorMetrics() if args.metrics_port else None
    if metrics is not None:
        metrics.serve(args.metrics_port)  # a busy port: one line now, not a startup retried forever
    context = OperatorContext(
        api=KubeApi(credentials),
        defaults=RunDefaults(concurrency=args.concurrency, qps=args.qps),
        etcd_config=etcd_config,
        metrics=metrics,
        etcd_prefix=args.etcd_prefix,
    )
    memo = OperatorMemo(credentials, context)
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None

    def operator() -> Coroutine[Any, Any, None]:
        if not auto_migrate:
            return operate(memo, liveness)
        # Beside kopf, so with --leader-elect only the Lease holder creates migrations.
        return beside_operator(
            operate(memo, liveness),
            credentials,
            etcd_config=etcd_config,
            etcd_root=args.etcd_prefix,
            interval_seconds=args.auto_migrate_interval,
        )

    if lease is None:
        asyncio.run(operator())
        return 0
    # The Lease has a client of its own: renewals must not queue behind the engine's requests,
    # and a short timeout keeps one hung request inside the renew deadline.
    lease_api = KubeApi(credentials, request_timeout=REQUEST_TIMEOUT_SECONDS)
    asyncio.run(lead(lease, lease_api, operator, health_port=args.health_port))
    return 0


async def _check_etcd(config: EtcdConfig, root: EtcdRoot) -> None:
    """Open the read-only etcd connection once and look for the apiserver's keys: certificates,
    name resolution, reachability and a wrong --etcd-prefix all fail here, named, before kopf
    starts (the same check as ``scan``)."""
    async with EtcdReader(config) as reader:
        await require_apiserver_keys(reader, root)
