#!/usr/bin/env python3
"""A tiny webhook receiver for the README walkthrough.

Prints every webhook ivrgate sends, checks its Standard Webhooks signature, and answers
decision webhooks with a menu. Standard library only; the signature check is the same
HMAC the Standard Webhooks libraries compute.

    python3 examples/receiver.py            # listens on 127.0.0.1:9000
"""
import base64
import hashlib
import hmac
import http.server
import json
import sys

SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
KEY = base64.b64decode(SECRET.split("_", 1)[1])


def verified(headers, body):
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


class Hooks(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        payload = json.loads(body)
        ok = verified(self.headers, body)
        print(f"{payload['type']}  id={self.headers['webhook-id']}  signature={'ok' if ok else 'BAD'}")
        print(json.dumps(payload["data"], indent=2, ensure_ascii=False))
        sys.stdout.flush()
        answer = {}
        if payload["type"].startswith("decision."):
            answer = {"action": "menu", "prompt": "welcome", "menu": "main", "max_digits": 1,
                      "attach": {"crm_id": "A-17"}}
        out = json.dumps(answer).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 9000), Hooks)
    except OSError as e:
        sys.exit(f"cannot listen on 127.0.0.1:9000: {e.strerror} (is another receiver still running?)")
    print("listening on http://127.0.0.1:9000/hooks (the webhook_url of config/minimal.toml), "
          "verifying with its webhook_secret; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
