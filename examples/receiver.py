#!/usr/bin/env python3
"""A webhook receiver for ivrgate (the README walkthrough), standard library only.

Prints every webhook ivrgate sends, checks it as Standard Webhooks says, answers decision
webhooks with a valid action for their decision point and events with 200:

    python3 examples/receiver.py [--listen HOST:PORT] [--tls CERT KEY]   # default 127.0.0.1:9000
    python3 examples/receiver.py verify ID TIMESTAMP SIGNATURES < body

The secret is WEBHOOK_SECRET (default: the webhook_secret of config/minimal.toml). A request
passes when one of its space-separated `v1,` signatures is the HMAC-SHA256 of
`{id}.{timestamp}.{body}` (compared in constant time) and its webhook-timestamp is at most
5 minutes from this machine's clock; anything else gets 401. A webhook-id already processed
is answered 200 again (a decision with the same answer) and not processed twice. `verify`
checks one signature without the timestamp tolerance (for test vectors).
Node.js, Java and Go versions with the same interface: examples/receiver-node/,
examples/receiver-java/, examples/receiver-go/.
"""
import base64
import binascii
import collections
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time

DEFAULT_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
DEFAULT_LISTEN = "127.0.0.1:9000"
TOLERANCE_S = 5 * 60
REMEMBERED_IDS = 10000
MAX_BODY = 1024 * 1024


def key_of(secret):
    if not secret.startswith("whsec_"):
        sys.exit("receiver: WEBHOOK_SECRET must start with whsec_")
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except binascii.Error as e:
        sys.exit(f"receiver: WEBHOOK_SECRET is not base64 after whsec_: {e}")
    if not key:
        sys.exit("receiver: WEBHOOK_SECRET holds no key after whsec_")
    return key


SECRET = os.environ.get("WEBHOOK_SECRET") or DEFAULT_SECRET
KEY = key_of(SECRET)


def signature_matches(msg_id, timestamp, body, header):
    """Whether any of the space-separated signatures is ours for (id, timestamp, body)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = b"v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest())
    # compare_digest is constant-time; different lengths (a bare "v1,") never match.
    return any(len(s) == len(expected) and hmac.compare_digest(s, expected)
               for s in header.encode().split(b" "))


def decide(payload):
    """The answer to a decision: a valid action for each Voicenter decision point."""
    kind = (payload.get("data") or {}).get("kind")
    if kind == "ivr_action":
        return {"action": "menu", "prompt": "welcome", "menu": "main", "max_digits": 1,
                "attach": {"crm_id": "A-17"}}
    if kind == "layer_input":
        return {"action": "goto", "target": "1", "attach": {"crm_id": "A-17"}}
    if kind == "caller_lookup":
        return {"action": "lookup_result", "found": True, "name": "Demo Caller",
                "url": "https://crm.example/c/A-17"}
    return {"action": "default"}


# webhook-id -> the answer already given; oldest forgotten first.
processed = collections.OrderedDict()
lock = threading.Lock()


class Hooks(http.server.BaseHTTPRequestHandler):
    def reply(self, status, answer):
        sys.stdout.flush()
        out = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.reply(413, {"error": "body too large"})
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id")
        timestamp = self.headers.get("webhook-timestamp")
        signatures = self.headers.get("webhook-signature")
        if not (msg_id and timestamp and signatures):
            print(f"refused id={msg_id or '-'}: missing webhook-id, webhook-timestamp or "
                  "webhook-signature")
            return self.reply(400, {"error": "missing Standard Webhooks headers"})
        if not signature_matches(msg_id, timestamp, body, signatures):
            print(f"refused id={msg_id}: signature=BAD")
            return self.reply(401, {"error": "bad signature"})
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_S:
            print(f"refused id={msg_id}: webhook-timestamp {timestamp} is more than "
                  f"{TOLERANCE_S} s from now")
            return self.reply(401, {"error": "timestamp outside tolerance"})
        with lock:
            answer = processed.get(msg_id)
            if answer is not None:
                print(f"duplicate id={msg_id}: already processed, answered again")
                return self.reply(200, answer)
            try:
                payload = json.loads(body)
                kind = str(payload["type"])
            except (ValueError, KeyError, TypeError) as e:
                print(f"refused id={msg_id}: body is not a webhook payload ({e})")
                return self.reply(400, {"error": "body is not a webhook payload"})
            print(f"{kind}  id={msg_id}  signature=ok")
            print(json.dumps(payload.get("data"), indent=2, ensure_ascii=False))
            answer = decide(payload) if kind.startswith("decision.") else {}
            processed[msg_id] = answer
            if len(processed) > REMEMBERED_IDS:
                processed.popitem(last=False)
        self.reply(200, answer)

    def do_GET(self):
        self.reply(405, {"error": "POST only"})

    def log_message(self, *args):
        pass


def main(argv):
    if argv[:1] == ["verify"]:
        if len(argv) != 4:
            sys.exit("usage: receiver.py verify ID TIMESTAMP SIGNATURES < body")
        ok = signature_matches(argv[1], argv[2], sys.stdin.buffer.read(), argv[3])
        print("ok" if ok else "bad")
        sys.exit(0 if ok else 1)
    listen = DEFAULT_LISTEN
    tls = None
    usage = "usage: receiver.py [--listen HOST:PORT] [--tls CERT KEY]"
    rest = list(argv)
    while rest:
        if rest[0] == "--listen" and len(rest) >= 2:
            listen, rest = rest[1], rest[2:]
        elif rest[0] == "--tls" and len(rest) >= 3:
            tls, rest = (rest[1], rest[2]), rest[3:]
        else:
            sys.exit(f"receiver: unknown arguments {argv}; {usage}")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        sys.exit(f"receiver: --listen {listen} is not HOST:PORT")
    try:
        server = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), Hooks)
    except OSError as e:
        sys.exit(f"cannot listen on {listen}: {e.strerror} (is another receiver still running?)")
    scheme = "http"
    if tls:
        # HTTPS with the given PEM certificate chain and key (give ivrgate the CA that
        # signed it as the tenant's ca_file when it is a private one).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(tls[0], tls[1])
        except (OSError, ssl.SSLError) as e:
            sys.exit(f"receiver: cannot load --tls {tls[0]} {tls[1]}: {e}")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    where = " (the webhook_url of config/minimal.toml)" if listen == DEFAULT_LISTEN else ""
    which = "WEBHOOK_SECRET" if os.environ.get("WEBHOOK_SECRET") else "its webhook_secret"
    print(f"listening on {scheme}://{listen}/hooks{where}, verifying with {which}; Ctrl-C stops",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
