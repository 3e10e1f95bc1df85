#!/usr/bin/env python3
"""Plays an IVR script against a running gateway with Python's own xmlrpc.client, and the
customer's system against its command API with urllib.

Usage: openscape_flows.py http://HOST:PORT FLOW [COMMAND_BASE]

FLOW is one of
  ivr_hold    the seed's "Unmonitored IVR system Step Sequence (IVR Hold)", steps 1-8;
  queue_hold  an unmonitored Queue Hold call: enqueue, transit number, transfer, assignment;
  fmnq        a monitored FMNQ call with an uninterruptible section (SetCallTransferable 0/1).
COMMAND_BASE (default: the same host) is where the command API is reached, so that the
assignment can go through another gateway process than the IVR's calls.

The tenant is `acme`; its [tenants.openscape] has transit_numbers (reported as arrived in
the configured format, percent-encoded in the path). Prints one JSON object
(CallID, transit number, ...) on stdout; exit status 1 with the first mismatch on stderr.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xmlrpc.client


class Mismatch(Exception):
    pass


def check(what, condition, got):
    if not condition:
        raise Mismatch(f"{what}: got {got!r}")


def command(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{base}/api/acme/openscape/{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def assign_later(base, call_id, delay, result, order="assign", extension="4711"):
    def run():
        time.sleep(delay)
        result.append(command(base, "POST", f"calls/{call_id}/{order}", {"extension": extension}))

    t = threading.Thread(target=run)
    t.start()
    return t


def ivr(base, channel):
    return xmlrpc.client.ServerProxy(f"{base}/openscape/acme/{channel}", allow_none=True)


def initialized(api, channel):
    r = api.Initialize("6060", "6000@deerhurst", 10000)
    check("Initialize", r["ReturnCode"] == 0, r)


def ivr_hold(base, cmd):
    api = ivr(base, "6060")
    # 1. Answer incoming IVR call. 2. Initialize, SetCallInfo, QueryCallInfo.
    initialized(api, "6060")
    r = api.SetCallInfo("9055551234", "12345")
    check("SetCallInfo", r["ReturnCode"] == 0, r)
    r = api.QueryCallInfo("6060", ">CallID", ">originalANI", ">originalDNIS", ">UUID", ">Visits",
                          ">FMNQ", ">InternalANI", ">InternalDNIS", "1;")
    check("QueryCallInfo", r["ReturnCode"] == 0 and r["originalANI"] == "9055551234", r)
    call_id = r["CallID"]
    check("CallID", 0 < len(call_id) <= 18, call_id)
    r = api.SetCallInfo("1", "2")
    check("SetCallInfo after QueryCallInfo", r["ReturnCode"] == -312, r)
    # 3. Main menu: the caller's choice is kept as contact data.
    r = api.SetContactData(call_id, "Choice", "Sales")
    check("SetContactData", r["ReturnCode"] == 0, r)
    # 4. Enqueue (IVR Hold).
    r = api.Enqueue(call_id, 1, "Sales", 12, "Call enqueued from IVR", ">EstWaitTime",
                    ">CallInQueue", "9055551234;12345")
    check("Enqueue", r["ReturnCode"] == 0 and r["CallsInQueue"] >= 1, r)
    # 5. QueryCallStatus until Pending: queued first, then the customer assigns while the
    # poll is waiting.
    r = api.QueryCallStatus(call_id, 0, ">Extension", ">PositionInQueue")
    check("QueryCallStatus queued", r["ReturnCode"] == 1 and r["PositionInQueue"] >= 1, r)
    result = []
    t = assign_later(cmd, call_id, 0.3, result)
    started = time.monotonic()
    r = api.QueryCallStatus(call_id, 8000, ">Extension", ">PositionInQueue")
    waited = time.monotonic() - started
    t.join(10)
    check("assignment", result and result[0][0] == 200, result)
    check("QueryCallStatus pending", r["ReturnCode"] == 2 and r["Extension"] == "4711", r)
    check("woken by the assignment, not the timeout", 0.2 < waited < 5, waited)
    # 6. GetTransitNumber.
    r = api.GetTransitNumber(call_id, ">TransitNumber")
    check("GetTransitNumber", r["ReturnCode"] == 0 and r["TransitNumber"], r)
    number = r["TransitNumber"]
    # 7. Transfer to the transit number; the contact center sees the call arrive on it.
    status, body = command(cmd, "POST", f"transit/{urllib.parse.quote(number, safe='')}/arrived")
    check("transit arrived", status == 200, (status, body))
    # 8. The call goes to the assigned user: it has left the IVR.
    status, body = command(cmd, "GET", f"calls/{call_id}")
    check("call handed over", status == 410, (status, body))
    r = api.ReleaseTransitNumber(call_id)
    check("ReleaseTransitNumber after the transfer", r["ReturnCode"] == -903, r)
    return {"call_id": call_id, "transit_number": number, "waited_s": round(waited, 3)}


def queue_hold(base, cmd):
    api = ivr(base, "6061")
    initialized(api, "6061")
    r = api.QuerySystemStatus(">OverallStatus", ">IndividualServerStates", ">Entries")
    check("QuerySystemStatus", r["ReturnCode"] == 0 and r["OverallStatus"] == 1, r)
    check("SetCallInfo", api.SetCallInfo("9055557900", "69030")["ReturnCode"] == 0, "")
    r = api.QueryCallInfo("6061", ">CallID", ">originalANI", ">originalDNIS", ">UUID", ">Visits",
                          ">FMNQ", ">InternalANI", ">InternalDNIS", "1;")
    call_id = r["CallID"]
    r = api.QueryQueueStatistics("Support", ">CallsInQueue", ">EstimatedWait", ">AverageWait",
                                 ">OldestCallInQueue", ">ServiceLevel")
    check("QueryQueueStatistics", r["ReturnCode"] == 0, r)
    # Queue Hold: IVRHold 0, then GetTransitNumber right away and transfer.
    r = api.Enqueue(call_id, 0, "Support", 20, "Queue hold", ">EstWaitTime", ">CallInQueue")
    check("Enqueue", r["ReturnCode"] == 0, r)
    r = api.GetTransitNumber(call_id, ">TransitNumber")
    check("GetTransitNumber", r["ReturnCode"] == 0, r)
    number = r["TransitNumber"]
    r = api.GetTransitNumber(call_id, ">TransitNumber")
    check("GetTransitNumber again keeps the number", r["TransitNumber"] == number, r)
    status, body = command(cmd, "POST", f"transit/{urllib.parse.quote(number, safe='')}/arrived")
    check("transit arrived", status == 200 and body["call"]["status"] == "queued", (status, body))
    # The IVR line is free for the next call: Initialize does not abandon a call that left.
    initialized(api, "6061")
    # The contact center assigns the call, held in its ACD group.
    status, body = command(cmd, "POST", f"calls/{call_id}/assign", {"extension": "4712"})
    check("assignment", status == 200 and body["call"]["status"] == "pending", (status, body))
    status, body = command(cmd, "POST", f"calls/{call_id}/assign", {"extension": "4712"})
    check("second assignment", status == 409, (status, body))
    return {"call_id": call_id, "transit_number": number}


def fmnq(base, cmd):
    device = "36200"
    status, body = command(cmd, "POST", f"devices/{device}/calls", {
        "ani": "9055557900", "dnis": "69030", "uuid": "u-1", "visits": 1, "fmnq": 1,
        "internal_ani": "4400", "internal_dnis": "36000"})
    check("register call", status == 201, (status, body))
    api = ivr(base, device)
    initialized(api, device)
    r = api.QueryCallInfo(device, ">CallID", ">originalANI", ">originalDNIS", ">UUID", ">Visits",
                          ">FMNQ", ">InternalANI", ">InternalDNIS")
    check("QueryCallInfo", r["ReturnCode"] == 0 and r["FMNQ"] == 1 and r["InternalDNIS"] == "36000", r)
    call_id = r["CallID"]
    r = api.GetTransitNumber(call_id, ">TransitNumber")
    check("GetTransitNumber on a monitored call", r["ReturnCode"] == -310, r)
    r = api.Enqueue(call_id, 1, "Sales", 50, "FMNQ", ">EstWaitTime", ">CallInQueue")
    check("Enqueue", r["ReturnCode"] == 0, r)
    # Uninterruptible section: the call may not be taken away.
    r = api.SetCallTransferable(call_id, 0)
    check("SetCallTransferable 0", r["ReturnCode"] == 0, r)
    status, body = command(cmd, "POST", f"calls/{call_id}/assign", {"extension": "4711"})
    check("assignment refused while uninterruptible", status == 409 and body["error"]["code"] == "not_transferable", (status, body))
    r = api.GetCallTransferable(call_id, ">FlagValue")
    check("GetCallTransferable", r["ReturnCode"] == 0 and r["FlagValue"] == 0, r)
    r = api.QueryCallStatus(call_id, 0, ">Extension", ">PositionInQueue")
    check("still queued", r["ReturnCode"] == 1, r)
    r = api.SetCallTransferable(call_id, 1)
    check("SetCallTransferable 1", r["ReturnCode"] == 0, r)
    result = []
    t = assign_later(cmd, call_id, 0.3, result)
    r = api.QueryCallStatus(call_id, 8000, ">Extension", ">PositionInQueue")
    t.join(10)
    check("QueryCallStatus pending", r["ReturnCode"] == 2 and r["Extension"] == "4711", r)
    r = api.SetCallTransferable(call_id, 0)
    check("SetCallTransferable 0 while being transferred", r["ReturnCode"] == -914, r)
    r = api.Transfer(call_id, r"4711")
    check("Transfer", r["ReturnCode"] == 0, r)
    r = api.Disconnect(call_id)
    check("Disconnect after the transfer", r["ReturnCode"] == -903, r)
    return {"call_id": call_id}


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    base, flow = argv[1].rstrip("/"), argv[2]
    cmd = argv[3].rstrip("/") if len(argv) == 4 else base
    flows = {"ivr_hold": ivr_hold, "queue_hold": queue_hold, "fmnq": fmnq}
    try:
        out = flows[flow](base, cmd)
    except (Mismatch, KeyError, xmlrpc.client.Error, OSError) as e:
        print(f"{flow}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
