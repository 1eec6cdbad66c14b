"""Verifying vidq's webhook signatures on the receiving side (standard library only)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300.0
) -> bool:
    """Whether a webhook delivery is authentic and fresh.

    ``secret`` is yours from ``GET /webhooks/secret`` (``Client.webhook_secret()``);
    ``headers`` the delivery's headers (any case); ``body`` its raw bytes. The signature
    ``X-Vidq-Webhook-Signature: v1=<hex>`` is HMAC-SHA256 over
    ``f"{request_id}\\n{timestamp}\\n{sha256_hex(body)}"``; a timestamp further than
    ``tolerance_s`` from now is rejected (replays).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    rid = lower.get("x-vidq-webhook-request-id", "")
    stamp = lower.get("x-vidq-webhook-timestamp", "")
    given = lower.get("x-vidq-webhook-signature", "")
    if not rid or not stamp.isdigit() or not given.startswith("v1="):
        return False
    if abs(time.time() - int(stamp)) > tolerance_s:
        return False
    message = f"{rid}\n{stamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given[3:])
