"""Tell someone a run failed: one PHI-free line, logged and optionally posted to a webhook.

The line names the run, the task and the exception *type* only: exception messages can
quote a landing path, and landing paths can carry identifiers. The webhook receives
``{"text": line}`` as JSON (the shape Slack, Mattermost and Teams incoming webhooks take).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.parse import urlparse

__all__ = ["failure_reason", "failure_text", "post_webhook", "webhook_url"]

log = logging.getLogger(__name__)


def failure_reason(error: BaseException | str | None) -> str:
    """The exception's type name; the cause's when ``error`` only wraps it (Airflow's
    fail-without-retry exception raised ``from`` the engine's error)."""
    if error is None:
        return "unknown error"
    if isinstance(error, str):  # Airflow passes a string for some failures (e.g. timeouts)
        return "task failure"
    cause = error.__cause__
    if cause is not None and type(error).__name__ == "AirflowFailException":
        return type(cause).__name__
    return type(error).__name__


def failure_text(dag_id: str, run_id: str, task: str, reason: str) -> str:
    """The one line a failure is reported with."""
    return f"dicom-deid: {dag_id} run {run_id} failed at task {task}: {reason}"


def webhook_url(conn_type: str | None, host: str | None, port: int | None,
                path: str | None) -> str:
    """The URL of a webhook connection: its host when that is already a URL, else
    ``http(s)://host[:port][/path]`` (https when the connection type says so)."""
    if not host:
        raise ValueError("the notification connection has no host")
    if "://" in host:
        return host
    scheme = "https" if (conn_type or "").lower() == "https" else "http"
    netloc = f"{host}:{port}" if port else host
    tail = f"/{path.lstrip('/')}" if path else ""
    return f"{scheme}://{netloc}{tail}"


def post_webhook(url: str, text: str, *, timeout: float = 10.0) -> int:
    """POST ``{"text": text}`` to ``url``; the HTTP status (an error status raises)."""
    if urlparse(url).scheme not in ("http", "https"):
        raise ValueError("a webhook URL must be http or https")
    request = urllib.request.Request(  # the scheme is checked above
        url, data=json.dumps({"text": text}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)
