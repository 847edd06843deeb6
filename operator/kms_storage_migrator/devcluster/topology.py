"""Which processes a dev cluster of N apiservers has, what each is called, and in which order they
stop; the load balancer's and the audit log's configuration files (pure: no I/O).

One etcd; per apiserver a KMS v2 plugin of its own (as each control-plane node runs its own
plugin) sharing one keyring file; with more than one apiserver, HAProxy in front of them.
Component names keep the single-apiserver names for index 1 (``kube-apiserver``,
``kms-plugin``), so state files and logs of one-apiserver clusters read as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

ETCD: Final = "etcd"
KMS_PLUGIN: Final = "kms-plugin"
APISERVER: Final = "kube-apiserver"
LOAD_BALANCER: Final = "load-balancer"
CONTROLLER_MANAGER: Final = "kube-controller-manager"
MAX_APISERVERS: Final = 9  # one loopback advertise address each, 127.0.0.1-9
_INDEXED: Final = re.compile(r"(?P<base>.+)-(?P<index>[0-9]+)")
_PROGRAMS: Final = {LOAD_BALANCER: "haproxy"}
# Clients stop before what they use: the controller manager and the load balancer talk to the
# apiservers, the apiservers to their plugins and to etcd.
_STOP_RANK: Final = {CONTROLLER_MANAGER: 0, LOAD_BALANCER: 1, APISERVER: 2, KMS_PLUGIN: 3, ETCD: 4}


def apiserver_component(index: int) -> str:
    return APISERVER if index == 1 else f"{APISERVER}-{index}"


def kms_plugin_component(index: int) -> str:
    return KMS_PLUGIN if index == 1 else f"{KMS_PLUGIN}-{index}"


def split_component(component: str) -> tuple[str, int]:
    """``kube-apiserver-3`` -> (``kube-apiserver``, 3); ``kube-apiserver`` -> (``kube-apiserver``, 1)."""
    match = _INDEXED.fullmatch(component)
    if match and match.group("base") in (APISERVER, KMS_PLUGIN):
        return match.group("base"), int(match.group("index"))
    return component, 1


def program_of(component: str) -> str:
    """The string the component's command line always holds (its program's name)."""
    base, _ = split_component(component)
    return _PROGRAMS.get(base, base)


def stop_order(components: Iterable[str]) -> list[str]:
    """``components`` in the order to stop them: clients first, the highest index first."""

    def rank(component: str) -> tuple[int, int]:
        base, index = split_component(component)
        return _STOP_RANK.get(base, -1), -index

    return sorted(set(components), key=rank)


def validate_apiserver_count(count: int) -> None:
    if not 1 <= count <= MAX_APISERVERS:
        raise ValueError(f"--apiservers must be between 1 and {MAX_APISERVERS}, not {count}")


def apiserver_hostname(index: int, count: int, machine_hostname: str) -> str:
    """The host name apiserver ``index`` runs under.

    kube-apiserver derives its identity (the Lease in kube-system, the ``apiserver_id_hash`` of
    its metrics) from its host name alone, so apiservers on one machine would share one
    identity; each of several gets a name of its own (set in a UTS namespace of its own).
    """
    return machine_hostname if count == 1 else f"ksm-dev-apiserver-{index}"


def advertise_address(index: int) -> str:
    """A loopback address of its own per apiserver (Linux routes all of 127.0.0.0/8 to lo)."""
    return f"127.0.0.{index}"


@dataclass(frozen=True)
class Backend:
    name: str
    port: int


def haproxy_config(front_port: int, backends: Sequence[Backend]) -> str:
    """HAProxy in TCP mode (TLS passes through to the apiservers), round robin, each apiserver
    checked on /readyz over TLS every second; a connection that fails goes to another one."""
    servers = "\n".join(
        f"  server {backend.name} 127.0.0.1:{backend.port} check check-ssl verify none"
        for backend in backends
    )
    return f"""\
global
  maxconn 2000

defaults
  mode tcp
  retries 3
  option redispatch
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout check 2s
  default-server inter 1s fall 2 rise 2

frontend apiservers
  bind 127.0.0.1:{front_port}
  default_backend apiservers

backend apiservers
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
{servers}
"""


# Every request with its request and response bodies: what a test needs to prove which data
# reached which client. RequestReceived is left out (each request would be logged twice).
DEFAULT_AUDIT_POLICY: Final = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: RequestResponse
"""
