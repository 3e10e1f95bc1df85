#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/{target}/ from tests/fixtures,
config/ and a few hand-written requests, in each target's input format (header lines, then
the body; see crates/fuzz-props). Run from the repository root; then `cargo fuzz cmin`."""
import glob, hashlib, os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def fixtures(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join(FIX, p)))
    return [read(p) for p in out]


def write(target, inputs):
    d = os.path.join(ROOT, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    for data in inputs:
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


xmlrpc = fixtures("voicenter/*.xml", "voicenter/responses/*.xml", "openscape/*.xml")
jsons = fixtures("voicenter/*.json", "voicenter/responses/*.json", "openscape/event.*.json")
forms = fixtures("voicenter/cdr_form.txt", "voicenter/popup.query")
ptk = fixtures("ptk/seed/*.xml")
hebrew = "queuename=שלום&status=ANSWER"

write("xmlrpc", xmlrpc + [
    b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name>"
    b"<value><int>4</int></value></member><member><name>faultString</name><value>x</value>"
    b"</member></struct></value></fault></methodResponse>",
    b"<methodCall><methodName>m</methodName><params><param><value><array><data><value><double>1.5"
    b"</double></value><value><base64>aGk=</base64></value><value><dateTime.iso8601>20240101T00:00:00"
    b"</dateTime.iso8601></value><value><nil/></value><value><boolean>1</boolean></value><value>"
    b"<i8>-9223372036854775808</i8></value><value>&#1488;&amp;</value></data></array></value></param>"
    b"</params></methodCall>",
])
write("json", jsons + [
    b"{METHOD: 'CDR', DATA: {a: 1, a: 2, b: [x: 1, y: 2],}}",
    b"[1, -0.5e10, true, null, \"\\u05e9\", 18446744073709551616]",
])
write("form", forms + [hebrew.encode(), b"?a=%F9%EC&&b=1+2&c&%zz=%"])
write("charset", [
    b"text/xml; charset=windows-1255\n" + hebrew.encode("windows-1255"),
    b"application/x-www-form-urlencoded; charset=iso-8859-8\n" + hebrew.encode("iso-8859-8"),
    b"text/xml\n\xff\xfe" + "<a>שלום</a>".encode("utf-16-le"),
    b"application/json; charset=\"utf-16\"\n\xfe\xff" + "{\"a\":1}".encode("utf-16-be"),
    b"\n<?xml version=\"1.0\" encoding=\"windows-1255\"?><a>" + "שלום".encode("windows-1255") + b"</a>",
    b"\n\xef\xbb\xbf{\"a\": \"\xd7\xa9\"}",
] + [b"text/xml\n" + x for x in xmlrpc[:3]])

vc = []
for body in fixtures("voicenter/*.xml"):
    vc.append(b"text/xml\n\n\n" + body)
for body in fixtures("voicenter/*.json"):
    vc.append(b"application/json\n\n\n" + body)
vc.append(b"application/json\ncdr\n\n" + read(os.path.join(FIX, "voicenter/cdr.json")))
vc.append(b"application/x-www-form-urlencoded\ncdr\n\n" + read(os.path.join(FIX, "voicenter/cdr_form.txt")))
vc.append(b"application/x-www-form-urlencoded; charset=windows-1255\ncdr\n\n"
          b"ivruniqueid=X1&status=ANSWER&queueid=7&queuename=%F9%EC%E5%ED")
vc.append(b"\npopup\n" + read(os.path.join(FIX, "voicenter/popup.query")).strip() + b"&token=s3cret\n")
vc.append(b"\n\ncaller=0544444444&ivruniqueid=abc&key=k\n")
vc.append(b"application/json\n\n\n{\"METHOD\": \"GET_IVR_ACTION\", \"DATA\": \"{\\\"CALLERID\\\": \\\"050\\\"}\"}")
write("voicenter", vc)

write("ptk_soap", [b"text/xml; charset=utf-8\n" + b for b in ptk]
      + [b"application/soap+xml\n" + b for b in ptk[:1]] + [b"\n" + b for b in ptk[:1]])

# The shared SOAP codec: the PTK fixtures and the CTIPS envelopes of WIRE.md (fuzz/seeds/soap).
ctips = [read(p) for p in sorted(glob.glob(os.path.join(ROOT, "fuzz", "seeds", "soap", "*.xml")))]
write("soap", [b"text/xml; charset=utf-8\n" + b for b in ptk + ctips]
      + [b"application/soap+xml\n" + b for b in ptk[:1]] + [b"\n" + b for b in ctips[:1]]
      + [b"text/xml; charset=windows-1255\n<x>\xf9\xec\xe5\xed</x>",
         b"\n<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", b"\n" + b"<a>" * 40 + b"</a>" * 40])
# The writer's round trip (split from `soap`, F4): text whose lines become written values.
write("soap_write", ptk + ctips + ["שלום\n\nx & <y> \"'\r\n\t\x01end".encode()])

# The CTIPS callback service: content type, the epoch the callback path names (empty: the
# one the target's gateway holds, 7), then the body. One PublishCTIEvent per event contract as
# the simulator writes it (its example `event_seeds`), the callback envelopes of WIRE.md, and
# hand-written edges: no i:type, the seed's element names, a stale epoch, another session.
import subprocess, tempfile
with tempfile.TemporaryDirectory() as events:
    subprocess.run(["cargo", "run", "-q", "-p", "ctips-sim", "--example", "event_seeds", events],
                   cwd=ROOT, check=True)
    sim_events = [read(p) for p in sorted(glob.glob(os.path.join(events, "*.xml")))]
NS_PUB = b"http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08"
SOAP11 = b"http://schemas.xmlsoap.org/soap/envelope/"
def publish(event):
    return (b'<s:Envelope xmlns:s="' + SOAP11 + b'"><s:Body><PublishCTIEvent xmlns="' + NS_PUB
            + b'"><ctiEvent xmlns:a="' + NS_PUB + b'">' + event
            + b"</ctiEvent></PublishCTIEvent></s:Body></s:Envelope>")
callbacks = [read(os.path.join(ROOT, "fuzz", "seeds", "soap", n)) for n in
             ("heartbeat.request.xml", "start_session.request.xml", "publish_route_request.request.xml")]
write("ctips", [b"text/xml; charset=utf-8\n\n" + b for b in sim_events + callbacks] + [
    b"text/xml\n\n" + publish(b"<a:EventType>RouteReject</a:EventType><a:CallId>5</a:CallId>"
                              b"<a:RequestIdList><a:int>1</a:int></a:RequestIdList>"),
    b"text/xml\n\n" + publish(b"<a:EventType>SnapShotUpdate</a:EventType><a:SnapShotType>CallInfo"
                              b"</a:SnapShotType><a:SnapShotComplete>true</a:SnapShotComplete><a:CallData>"
                              b"<a:CallId>9</a:CallId><a:CallSequenceId>2</a:CallSequenceId></a:CallData>"),
    b"text/xml\n\n" + publish(b'<a:EventType i:nil="true" xmlns:i="http://www.w3.org/2001/'
                              b'XMLSchema-instance">CallEnd</a:EventType><a:CallId> 4 </a:CallId>'),
    b"text/xml\n8\n" + callbacks[0],
    b"text/xml\n7/x\n" + callbacks[0],
    b"text/xml\n8\n" + b'<s:Envelope xmlns:s="' + SOAP11 + b'"><s:Body><Anything/></s:Body></s:Envelope>',
    b"text/xml\n\n" + callbacks[0].replace(b"3f2a", b"S-fuzz"),
    b"application/soap+xml; charset=windows-1255\n\n" + publish(b"<a:EventType>CallStarted</a:EventType>"
                              b"<a:ANI>\xf9\xec\xe5\xed</a:ANI>"),
])

osc = [b"text/xml\n\n" + b for b in fixtures("openscape/*.xml")]
osc += [
    b"application/json\n\n{\"method\": \"QueryCallInfo\", \"params\": [\"1341023126268002\", null, null, \">ANI\"]}",
    b"application/json\nEnqueue\n[\"1341023126268002\", \"Sales\", 0, 50, \"desc\", \">Est\", \">Calls\"]",
    b"application/json\n\n{\"method\": \"Initialize\", \"params\": [\"host\", 5000, 1]}",
]
write("openscape", osc)

write("command", [
    b"POST openscape/devices/36200/calls\n{\"call_id\": \"1341023126268002\", \"ani\": \"9055557900\", \"dnis\": \"69030\", \"fmnq\": true}",
    b"POST openscape/devices/36300/calls\n{\"ani\": \"+1 555 0100\", \"dnis\": \"69030\", \"uuid\": \"abc\", \"visits\": 2, \"fmnq\": true, \"internal_ani\": \"4400\", \"internal_dnis\": \"36000\"}",
    b"POST openscape/calls/1341023126268002/assign\n{\"extension\": \"4711\"}",
    b"POST openscape/calls/1341023126268002/timeout\n{extension: '7777'}",
    b"PUT openscape/queues/Sales/statistics\n{\"calls_in_queue\": 3, \"estimated_wait_s\": 45, \"average_wait_s\": 30, \"oldest_call_s\": 120, \"service_level\": 80}",
    b"PUT openscape/agents/188001\n{\"device\": \"4711\", \"status\": \"available\"}",
    b"PUT openscape/agents/188002\n{\"device\": \"4711\", \"status\": 9}",
    b"DELETE openscape/agents/188002\n",
    b"PUT openscape/system\n{\"servers\": {\"RoutingServer\": 1, \"TServer\": 5}, \"administration_server_available\": false}",
    b"POST openscape/transit/+15555550180/arrived\n",
    b"GET openscape/calls\n",
    b"GET openscape/channels/ch1\n",
    b"GET ptk/anything\n",
])

configs = [read(p) for p in sorted(glob.glob(os.path.join(ROOT, "config", "*.toml")))]
write("config", configs)

write("path", [
    b"/voicenter/acme/cdr", b"//voicenter/acme/cdr/", b"/openscape/acme/ch1/a%2Fb",
    b"/v/%2e%2e/x", b"/ptk/acme/%D7%A9%D7%9C%D7%95%D7%9D", b"/a/%zz", b"/a/%0A", b"/a%2f%2F/b",
    b"/a+b/c%20d/%25",
])
write("redact", [
    b"hunter2secret\n\"\nid = 1\n",
    b"s3cr3tvalue\nuser@host/path?token=abc&key=x#frag",
    b"p4ssw0rd99\n\n[[tenants]]\nid = \"acme\"\n",
    b"abc123xyz\n\"\"\" multi\nline",
    b"Zq9-token.value\n?sig=1&api-key=2&X-Amz-Signature=3",
])
write("forwarded", [
    b"10.0.0.1\n10.0.0.0/8\nx-forwarded-for: 203.0.113.7, 10.0.0.2\n",
    b"10.0.0.1\n10.0.0.0/8, ::1/128\nforwarded: for=203.0.113.7;proto=https, for=\"[2001:db8::1]:4711\"\n",
    b"192.0.2.1\n10.0.0.0/8\nx-forwarded-for: 203.0.113.7\n",
    b"::1\n::1/128\nx-forwarded-for: 198.51.100.2\nforwarded: for=198.51.100.3\n",
    b"10.0.0.1\n10.0.0.0/8\nx-forwarded-for: unknown\nx-forwarded-for: 10.0.0.9\n",
    b"10.0.0.1\n0.0.0.0/0\nforwarded: for=_hidden, for=\"1.2.3.\\4\"\n",
])
