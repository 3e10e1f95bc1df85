"""The customer's side of ivrgate's Voicenter API resources, with nothing but urllib.

Usage: voicenter_api.py COMMAND_BASE FIXTURE_DIR
  COMMAND_BASE  e.g. http://127.0.0.1:8080/api/acme/voicenter
  FIXTURE_DIR   tests/fixtures/voicenter/api (the seed's request examples)

Calls every method of seed 003 sections 1, 3, 6, 7, 8 and 10 through the command API as a
customer's system would (JSON in, JSON out), checks what a customer relies on (2xx, JSON,
Voicenter's answer under "voicenter", errors with Voicenter's message) and prints every
answer as one JSON document for the Rust test to compare with the seed's examples.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = sys.argv[1].rstrip("/")
FIXTURES = sys.argv[2]

DIALER = [
    "AddCall", "RemoveCall", "GetCampaignList", "GetMembersList", "RemoveMember",
    "AddMember", "StopCampaign", "StartCampaign", "UpdateCampaignStrategy",
    "ClearCampaignCalls", "AddCallsBulk", "GetCampaignPendingCalls", "UpdateCall",
    "GetCampaignDetails", "ConfigureIvrCampaign",
]


def call(method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            status, ctype, raw = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type"), e.read()
    assert ctype and ctype.startswith("application/json"), (path, ctype)
    return {"status": status, "body": json.loads(raw)}


def request_fixture(name):
    with open(os.path.join(FIXTURES, name + ".request.json"), encoding="utf-8") as f:
        text = f.read()
    # The seed's examples carry trailing commas (RemoveCall): a customer's JSON encoder
    # would not, so drop them the way a person copying the example would.
    import re
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    body = json.loads(text)
    if isinstance(body, dict):
        # The code is ivrgate's configuration, never the customer's.
        body = {k: v for k, v in body.items() if k.lower() != "code"}
    return body


def ok(result, what):
    assert result["status"] == 200, (what, result)
    assert "voicenter" in result["body"], (what, result)
    return result


out = {"dialer": {}}
for name in DIALER:
    out["dialer"][name] = call("POST", "/dialer/" + name, request_fixture(name))
    if name != "AddCallsBulk":
        ok(out["dialer"][name], name)
    else:
        assert out["dialer"][name]["status"] == 200, out["dialer"][name]
        assert out["dialer"][name]["body"]["queued"] == 2, out["dialer"][name]

out["click2call"] = ok(call("POST", "/click2call", {
    "phone": "0501234567", "target": "0729876543", "record": True,
    "phonecallerid": "0500000000", "custom_data": {"customer": "2342"},
}), "click2call")
assert out["click2call"]["body"]["voicenter"]["CALLID"], out["click2call"]
out["message"] = ok(call("POST", "/click2call/message", {
    "phone": "0501234567", "pre_rec": "welcome", "Dtmf": "123"}), "message")
out["callference"] = ok(call("POST", "/click2call/callference", {
    "phone": "0501234567", "bbbcode": "4455"}), "callference")
out["terminate"] = ok(call("POST", "/click2call/terminate", {"phone": "SIPEXT1"}), "terminate")
# The seed's own error example (XML-RPC): Voicenter's words, a clear status.
out["missing_phone"] = call("POST", "/click2call", {"target": "0729876543"})
assert out["missing_phone"]["status"] == 422, out["missing_phone"]
assert out["missing_phone"]["body"]["error"]["message"] == "Phone is missing", out["missing_phone"]

log = request_fixture("CallLog")
log.pop("format", None)
out["call_log"] = ok(call("POST", "/call-log", log), "call-log")
out["extensions_calls"] = ok(call("GET", "/active-calls/extensions"), "extensions calls")
out["queues_callers"] = ok(call("GET", "/active-calls/queues"), "queue callers")
out["extensions"] = ok(call("GET", "/extensions?show_all=true"), "extensions")
out["login"] = ok(call("POST", "/agents/status", request_fixture("SetStatusFromAPI")), "login")
out["originate"] = ok(call("POST", "/originate", {
    "from": "0501234567", "to": "0729876543", "attached": {"ticket": "T-1"}},
    {"Idempotency-Key": "py-originate-1"}), "originate")
again = call("POST", "/originate", {
    "from": "0501234567", "to": "0729876543", "attached": {"ticket": "T-1"}},
    {"Idempotency-Key": "py-originate-1"})
assert again["status"] == 200 and again["body"]["idempotent_replay"] is True, again
assert again["body"]["call_id"] == out["originate"]["body"]["call_id"], (again, out["originate"])
out["originate_again"] = again
print(json.dumps(out))
