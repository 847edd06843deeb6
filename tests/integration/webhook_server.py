"""An admission webhook for tests: HTTPS on 127.0.0.1, answers decided by a Python function.

The real kube-apiserver calls it like any webhook, through a Validating- or
MutatingWebhookConfiguration (``webhook_configuration``) whose caBundle is the throwaway CA
the dev cluster's PKI code makes for it. A test decides per request: allow, deny with a
message, or (mutating) allow with a JSONPatch.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kms_storage_migrator.devcluster.pki import issue_serving_pair


@dataclass(frozen=True)
class Verdict:
    """A webhook's answer: allowed or not, and for a mutating one a JSONPatch to apply."""

    allowed: bool = True
    message: str = ""
    patch: list[dict[str, Any]] | None = None


class AdmissionWebhook:
    """An HTTPS admission webhook on 127.0.0.1 whose answers come from ``decide(request)``.

    It counts the requests per object name, so a test can tell a single denial from a loop.
    """

    def __init__(self, directory: Path, decide: Callable[[dict[str, Any]], Verdict]) -> None:
        self.decide = decide
        self.calls: dict[str, int] = {}
        self.ca_pem = issue_serving_pair(directory, "test admission webhook")
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                name = str(request.get("name") or "")
                webhook.calls[name] = webhook.calls.get(name, 0) + 1
                verdict = webhook.decide(request)
                response: dict[str, Any] = {"uid": request["uid"], "allowed": verdict.allowed}
                if not verdict.allowed:
                    response["status"] = {"code": 403, "message": verdict.message}
                if verdict.patch is not None:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(verdict.patch).encode()).decode()
                body = json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.crt", directory / "server.key")
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AdmissionWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def webhook_configuration(
    kind: str, name: str, namespace: str, url: str, ca_pem: bytes, *, resource: str = "configmaps"
) -> dict[str, Any]:
    """A Validating- or MutatingWebhookConfiguration for UPDATEs of ``resource`` in one namespace,
    failurePolicy Fail."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{name}.faults.kms-storage-migrator.io",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": [resource],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
