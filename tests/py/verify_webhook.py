#!/usr/bin/env python3
"""Verifies one captured webhook delivery with the Standard Webhooks reference library.

Usage: verify_webhook.py FILE.json

FILE.json holds
    {
      "secret": "whsec_...",
      "headers": {"webhook-id": "...", "webhook-timestamp": "...", "webhook-signature": "..."},
      "body": "<the raw body as text>"          (or "body_base64": "<the raw bytes, base64>"),
      "now": 1700000000                          (optional, see below)
    }

Exit status 0 when `standardwebhooks.webhooks.Webhook(secret).verify(body, headers)` accepts
the delivery, 1 (with the library's reason on stderr) when it refuses it, 2 on bad usage.

The library also refuses a `webhook-timestamp` more than five minutes away from its own
clock. A test whose gateway runs on a moved clock (a retry "six hours later") passes that
moment as "now" (Unix seconds): the library then checks the timestamp against it instead of
the real time. Nothing else about the verification changes.
"""

import base64
import json
import sys
from datetime import datetime, timezone


def main(argv):
    if len(argv) != 2:
        print("usage: verify_webhook.py FILE.json", file=sys.stderr)
        return 2
    try:
        from standardwebhooks import webhooks
    except ImportError as e:
        print(f"standardwebhooks is not installed (pip install standardwebhooks): {e}", file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as f:
            doc = json.load(f)
        secret = doc["secret"]
        headers = {str(k): str(v) for k, v in doc["headers"].items()}
        if "body_base64" in doc:
            body = base64.b64decode(doc["body_base64"])
        else:
            body = doc["body"]
            if not isinstance(body, str):
                raise ValueError("body must be a string (or use body_base64)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"cannot read {argv[1]}: {e!r}", file=sys.stderr)
        return 2

    if doc.get("now") is not None:
        pinned = datetime.fromtimestamp(float(doc["now"]), tz=timezone.utc)

        class PinnedDatetime(datetime):
            @classmethod
            def now(cls, tz=None):
                return pinned if tz is None else pinned.astimezone(tz)

        # The library reads the time only through `datetime.now` in its own module.
        webhooks.datetime = PinnedDatetime

    try:
        payload = webhooks.Webhook(secret).verify(body, headers)
    except Exception as e:  # WebhookVerificationError, or a malformed header the library chokes on
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    kind = payload.get("type") if isinstance(payload, dict) else None
    print(f"verified {headers.get('webhook-id')} ({kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
