"""Calls a CTIPS client's callback service with zeep, a real SOAP client, from the WSDL written
from WIRE.md (tests/ctips/CTIEventService.wsdl).

Usage: ctips_publish.py URL EVENTS.json
URL is the ClientCallbackURL to call. EVENTS.json is a JSON list; each item is one call:
  {"event": "CTIRouteRequest", "fields": {"CallId": 5551, "RouteTimeout": 10,
      "CallInfo": {"ANI": "5551234", "CallData": [{"key": "k", "value": "v"}]}}}
                                    -> PublishCTIEvent(ctiEvent) with i:type="CTIRouteRequest"
  {"op": "Heartbeat", "sessionId": "S"}
  {"op": "StartSession", "sessionId": "S", "userName": "U", "password": "P"}
Members an event leaves out are filled as CTIPS would send them when they have no value: 0,
false, the enum's first name (INVALID), nil for strings, arrays and contracts. EventCategory and
EventType default to the event's own. zeep writes the members in schema order (base type first).
Prints one JSON line per call ({"op", "event", "result"} or {"op", "event", "fault"});
exits 1 when any call faults or fails, 2 on a usage error.
"""

import json
import os
import sys

import zeep
from lxml import etree
from zeep.exceptions import Fault, TransportError

HERE = os.path.dirname(os.path.abspath(__file__))
WSDL = os.path.join(HERE, "..", "ctips", "CTIEventService.wsdl")
CD_XSD = os.path.join(HERE, "..", "ctips", "commondata.xsd")
PUB = "http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08"
XS = "http://www.w3.org/2001/XMLSchema"
BINDING = f"{{{PUB}}}BasicHttpBinding_CTIEventService"

CATEGORY = {
    "Agent": ["AgentLoginRequestFailed", "AgentLoginStateChange", "AgentRequestFailed",
              "AgentStateChange", "AudioPathStateChange", "EnterPasscode"],
}


def enum_first_values():
    doc = etree.parse(CD_XSD)
    out = {}
    for st in doc.getroot().findall(f"{{{XS}}}simpleType"):
        first = st.find(f"{{{XS}}}restriction/{{{XS}}}enumeration")
        if first is not None:
            out[st.get("name")] = first.get("value")
    return out


ENUM_FIRST = enum_first_values()


def event_header(kind):
    name = kind[3:] if kind.startswith("CTI") else kind
    if kind == "CTIRouteRejected":
        name = "RouteReject"
    if name in CATEGORY["Agent"]:
        cat = "EventCategoryAgent"
    elif name.startswith("Call") or name == "DigitsDialed":
        cat = "EventCategoryCall"
    elif name.startswith("Route"):
        cat = "EventCategoryRoute"
    else:
        cat = "EventCategorySystem"
    return {"EventCategory": cat, "EventType": name}


def is_array(xtype):
    els = getattr(xtype, "elements", None) or []
    return len(els) == 1 and els[0][1].max_occurs == "unbounded"


def build(xtype, value, fill):
    """A value zeep can serialize for `xtype`, filling missing members when `fill`."""
    if value is None:
        return None
    els = getattr(xtype, "elements", None)
    if els is None:
        return value
    if is_array(xtype):
        item_name, item_el = els[0]
        return {item_name: [build(item_el.type, v, True) for v in value]}
    out = {}
    for name, el in els:
        if name in value:
            out[name] = build(el.type, value[name], True)
        elif fill:
            out[name] = default_for(el)
    return xtype(**out)


def default_for(el):
    t = el.type
    local = t.qname.localname if t.qname is not None else ""
    if local in ("int", "long", "short"):
        return 0
    if local == "boolean":
        return False
    if local in ENUM_FIRST:
        return ENUM_FIRST[local]
    return None


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    url, path = argv
    with open(path, encoding="utf-8") as f:
        calls = json.load(f)
    client = zeep.Client(WSDL)
    service = client.create_service(BINDING, url)
    failed = 0
    for call in calls:
        op = call.get("op", "PublishCTIEvent")
        kind = call.get("event")
        line = {"op": op, "event": kind}
        try:
            if op == "PublishCTIEvent":
                xtype = client.get_type(f"{{{PUB}}}{kind}")
                fields = dict(event_header(kind))
                fields.update(call.get("fields", {}))
                result = service.PublishCTIEvent(ctiEvent=build(xtype, fields, True))
            elif op == "Heartbeat":
                result = service.Heartbeat(sessionId=call["sessionId"])
            elif op == "StartSession":
                creds = client.get_type("{http://www.aspect.com/unifiedip/edk/commondata/2009/08}UserCredentials")
                result = service.StartSession(
                    userinfo=creds(UserName=call.get("userName"), Password=call.get("password")),
                    sessionId=call["sessionId"])
            else:
                print(f"unknown op {op}", file=sys.stderr)
                return 2
            line["result"] = result
        except (Fault, TransportError, zeep.exceptions.Error, OSError) as e:
            failed += 1
            line["fault"] = str(e) or type(e).__name__
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
