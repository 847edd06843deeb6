"""Admission webhooks in the way of the migration's no-op write: which ones intercept it.

``webhooks.py`` reads configurations, ``selectors.py`` evaluates label selectors and
``matching.py`` decides, per object, which webhooks admission calls for our write (all pure);
``reader.py`` lists the configurations and namespaces through the API, kept fresh during a run.
Preflight calls :func:`intercepting_webhooks`; the page writer uses ``guard.py``.
"""

from kms_storage_migrator.admission.matching import Interception, interception, interceptions
from kms_storage_migrator.admission.reader import ResourceInterceptions, WebhookReader, intercepting_webhooks
from kms_storage_migrator.admission.webhooks import Webhook, WebhookKind

__all__ = [
    "Interception",
    "ResourceInterceptions",
    "Webhook",
    "WebhookKind",
    "WebhookReader",
    "intercepting_webhooks",
    "interception",
    "interceptions",
]
