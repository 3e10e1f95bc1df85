#!/usr/bin/env python3
"""A webhook receiver for the `ivrgate simulate` tests: verifies every request with the
Standard Webhooks reference library and answers decisions with a small call flow.

Usage: sim_receiver.py SECRET FLOW [CERT KEY]

Prints `{"port": N}` once listening on 127.0.0.1 (over TLS when CERT and KEY are given), then
one JSON line per request: {"type", "id", "verified", "error", "data"}. A request that does not
verify gets 401. FLOW says how decisions are answered:

  menu-dial   ivr_action: the first a menu "main"; then key 1 dials 2001, key 2 goes to
              layer 7, anything else hangs up. layer_input: dials 2002 and 2003.
              Every other decision point: its platform's own answer (see below).
              routing_info: by the contact data "Choice": 1 enqueues in Sales, 2 dials 2001,
              anything else hangs up.
  slow        menu-dial's answers, each decision after 1 s.
  bad         what the platform cannot carry out: Voicenter's ivr_action after the first
              menu, a dial to two targets at once (its CALL dials one); OpenScape's
              routing_info, an enqueue with priority 500 (1 to 100); PTK's segment_state,
              an enqueue (it takes default or a native state).
              segment_state (menu-dial): Normal, EWT 300 s, a callback offered.
              route_request (CTIPS): to service 4; bad: to service 99, which CTIPS has not.
"""
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRET, FLOW = sys.argv[1], sys.argv[2]
TLS = sys.argv[3:5] if len(sys.argv) >= 5 else None
hook = Webhook(SECRET)
lock = threading.Lock()


def answer(payload):
    data = payload.get("data") or {}
    kind = data.get("kind")
    if kind == "ivr_action":
        if data.get("menu") == "-1":
            return {"action": "menu", "prompt": "welcome", "menu": "main", "max_digits": 1,
                    "attach": {"crm_id": "A-17"}}
        if FLOW == "bad":
            return {"action": "dial", "targets": ["2001", "2002"]}
        if data.get("dtmf") == "1":
            return {"action": "dial", "targets": ["2001"], "ring_timeout_s": 20}
        if data.get("dtmf") == "2":
            return {"action": "goto", "target": "7"}
        return {"action": "hangup", "prompt": "goodbye"}
    if kind == "layer_input":
        return {"action": "dial", "targets": ["2002", "2003"]}
    if kind == "routing_info":
        if FLOW == "bad":
            return {"action": "enqueue", "queue": "Sales", "priority": 500}
        choice = (data.get("contact_data") or {}).get("Choice")
        if choice == "1":
            return {"action": "enqueue", "queue": "Sales", "priority": 5,
                    "description": "asked for sales", "attach": {"crm_id": "B-9"}}
        if choice == "2":
            return {"action": "dial", "targets": ["2001"]}
        return {"action": "hangup"}
    if kind == "route_request":
        if FLOW == "bad":
            return {"action": "enqueue", "queue": "99"}
        return {"action": "enqueue", "queue": "4", "attach": {"crm_id": "C-3"}}
    if kind == "segment_state":
        if FLOW == "bad":
            return {"action": "enqueue", "queue": "Sales"}
        return {"native": {"OperationMode": "Normal", "EWT": 300, "OfferTreatment": 1}}
    return {"action": "default"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {"id": headers.get("webhook-id"), "verified": False, "error": None}
        try:
            payload = hook.verify(body, headers)
            entry["verified"] = True
        except Exception as e:  # the library's refusal, reported to the test
            entry["error"] = str(e)
            payload = json.loads(body or b"{}")
        entry["type"] = payload.get("type")
        entry["data"] = payload.get("data")
        with lock:
            print(json.dumps(entry), flush=True)
        if not entry["verified"]:
            status, out = 401, {"error": "bad signature"}
        elif str(entry["type"]).startswith("decision."):
            if FLOW == "slow":
                time.sleep(1.0)
            status, out = 200, answer(payload)
        else:
            status, out = 200, {}
        raw = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if TLS:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS[0], TLS[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
