"""Calls every PTK method through zeep, a real SOAP client generated from ivrgate's WSDL.

Usage: ptk_zeep.py WSDL_URL
Loads the WSDL, binds both ports (SOAP 1.1 and SOAP 1.2) and calls each of the 26 methods
with typed arguments in the order an IVR would, checking the status code of every answer.
Prints one line per call; exits 1 on the first unexpected code.
"""

import sys
import urllib.request

import zeep
from lxml import etree
from zeep import Plugin

XS = "http://www.w3.org/2001/XMLSchema"


class Validate(Plugin):
    """Validates every answer's Body content against the WSDL's schema with lxml (strict XSD),
    beyond what zeep's own parsing checks."""

    def __init__(self, wsdl_url):
        wsdl = etree.parse(urllib.request.urlopen(wsdl_url))
        self.schema_node = wsdl.find(f".//{{{XS}}}schema")
        self.schema = etree.XMLSchema(etree.ElementTree(self.schema_node))
        self.checked = 0
        self.errors = []

    def ingress(self, envelope, http_headers, operation):
        body = next((c for c in envelope if etree.QName(c).localname == "Body"), None)
        if body is not None and len(body):
            if not self.schema.validate(etree.ElementTree(body[0])):
                self.errors.append(f"{operation.name}: {self.schema.error_log.last_error}")
            self.checked += 1
        return envelope, http_headers


def code(result):
    """The status code of an answer, whatever its shape."""
    if hasattr(result, "ResultCode") and result.ResultCode is not None:
        return int(result.ResultCode)
    return int(result.Header.Status.Code)


# The enumerated parameters: (method, parameter, whether the method wraps them in `data`).
ENUMERATED = [
    ("InteractionCancelled", "CancelledBy", False),
    ("InteractionDequeued", "Reason", False),
    ("InteractionDisconnectedByApplication", "Reason", False),
    ("InteractionDisconnectedByCaller", "Reason", False),
    ("InteractionOutboundAttemptFailed", "Reason", False),
    ("InteractionSendToQueue", "Reason", False),
    ("ModifyInteraction", "Action", True),
    ("RemoveInteraction", "Reason", True),
]


def enumerations(client, validate, failures):
    """What a client generated from the WSDL learns about the enumerated parameters: zeep
    binds each to its named simpleType, whose values the schema lists; a strict validator
    (lxml) takes each listed value and refuses one that is not. Prints one line per
    parameter: `enumeration Method.Param Type: v1|v2|...`."""
    tns = validate.schema_node.get("targetNamespace")
    declared = {}
    for simple in validate.schema_node.findall(f"{{{XS}}}simpleType"):
        values = [e.get("value") for e in simple.findall(f"{{{XS}}}restriction/{{{XS}}}enumeration")]
        declared[simple.get("name")] = values
    for method, param, wrapped in ENUMERATED:
        if wrapped:
            owner = client.get_type(f"{{{tns}}}{method}Data")
        else:
            owner = client.get_element(f"{{{tns}}}{method}").type
        element = dict(owner.elements).get(param)
        if element is None or element.type.qname is None or element.type.qname.namespace != tns:
            seen = element.type.qname if element is not None else None
            failures.append(f"{method}.{param}: zeep sees {seen}, not an enumerated type")
            continue
        type_name = element.type.qname.localname
        # zeep resolves the type by name, as generated code would.
        client.get_type(f"{{{tns}}}{type_name}")
        values = declared.get(type_name) or []
        if not values:
            failures.append(f"{method}.{param}: {type_name} declares no enumeration")
            continue
        print(f"enumeration {method}.{param} {type_name}: {'|'.join(values)}")

        def request(value):
            q = lambda n: f"{{{tns}}}{n}"
            root = etree.Element(q(method))
            inner = etree.SubElement(root, q("data")) if wrapped else root
            etree.SubElement(inner, q("Tenant")).text = "T"
            etree.SubElement(inner, q("InteractionId")).text = "I"
            etree.SubElement(inner, q(param)).text = value
            return etree.ElementTree(root)

        for value in values:
            if not validate.schema.validate(request(value)):
                failures.append(f"{method}.{param}={value!r} refused: {validate.schema.error_log.last_error}")
        if validate.schema.validate(request("NotAValue")):
            failures.append(f"{method}.{param}: a value outside the enumeration passed the schema")


def main():
    validate = Validate(sys.argv[1])
    client = zeep.Client(sys.argv[1], plugins=[validate])
    ns = client.wsdl.types.prefix_map.get("tns") or next(iter(client.wsdl.services.values()))
    service = client.service
    soap12 = client.bind("PlatformToolkit", "PlatformToolkitSoap12")
    failures = []

    def check(name, result, expected):
        got = code(result)
        print(f"{name}: {got}")
        if got != expected:
            failures.append(f"{name}: expected {expected}, got {got}")
        return result

    t, seg = "Portree", "VHT_Test"
    check("GetVersion", service.GetVersion(data={}), 107000)
    check("GetStatus", service.GetStatus(data={"Tenant": t}), 106000)
    check("GetStatus(unknown)", service.GetStatus(data={"Tenant": "Nope"}), 109006)
    segments = check("GetSegments", service.GetSegments(data={"Options": {"Tenant": t}}), 107000)
    assert segments.Data.Segments.Segment[0].Name == seg, segments
    state = check("GetSegmentState", soap12.GetSegmentState(data={"Tenant": t, "Segment": seg}), 107000)
    names = [s.Name for s in state.Data.Segments.Segment[0].StateData.StateData]
    assert "OperationMode" in names, names
    variables = check(
        "GetSegmentVariables",
        service.GetSegmentVariables(
            data={"Tenant": t, "Segment": seg, "Options": {"Variable": ["MAXATTEMPTS"]}}
        ),
        107000,
    )
    assert [v.Name for v in variables.Data.Segments.Segment[0].Variables.Variable] == ["MAXATTEMPTS"]
    system = check("GetSystemVariables", service.GetSystemVariables(Tenant=t), 107000)
    assert "SiteName" in [v.Name for v in system.Variables.Variable], system
    check(
        "ValidateContact",
        service.ValidateContact(data={"Tenant": t, "Segment": seg, "Contact": "5551234"}),
        107000,
    )
    check(
        "ValidateContact(invalid)",
        service.ValidateContact(data={"Tenant": t, "Segment": seg, "Contact": "12"}),
        108005,
    )
    slots = check(
        "GetNextAvailableAppointmentTime",
        service.GetNextAvailableAppointmentTime(
            data={"Tenant": t, "Segment": seg, "Options": {"NumberOfAppointments": 2}}
        ),
        107000,
    )
    assert len(slots.Data.AppointmentTimes.AppointmentTime) == 2, slots

    created = check(
        "CreateInteraction",
        service.CreateInteraction(
            Tenant=t,
            Segment=seg,
            ExternalTrackingId="ZEEP-1",
            SourceApplication="VXML Interaction Server",
            UserData={"UserDataAssignment": [{"Key": "a", "Value": {"IntegerValue": 1}}]},
        ),
        107000,
    )
    iid = created.InteractionId
    check(
        "AssociateInteractionWithExternalTrackingID",
        service.AssociateInteractionWithExternalTrackingID(
            Tenant=t, InteractionId=iid, ExternalTrackingId="ZEEP-2"
        ),
        107000,
    )
    check("InteractionQueued", service.InteractionQueued(Tenant=t, InteractionId=iid, SkillId="100"), 107000)
    check(
        "UpdateUserData",
        service.UpdateUserData(
            data={
                "Tenant": t,
                "InteractionId": iid,
                "UserData": {
                    "UserDataAssignment": [
                        {
                            "Key": "b",
                            "Value": {
                                "ListValue": {
                                    "UserDataAssignment": [
                                        {"Key": "x", "Value": {"StringValue": "y"}},
                                        {"Key": "uui", "Value": {"BinaryValue": "0A0B"}},
                                    ]
                                }
                            },
                        }
                    ]
                },
            }
        ),
        107000,
    )
    check(
        "UpdateInteractionData",
        service.UpdateInteractionData(
            Tenant=t,
            InteractionId=iid,
            InteractionData={"KeyValuePair": [{"Key": "ExternalTrackingId", "Value": "ZEEP-3"}]},
        ),
        107000,
    )
    data = check("GetInteractionData", service.GetInteractionData(data={"Tenant": t, "InteractionId": iid}), 107000)
    keys = [a.Key for a in data.Data.Interactions.Interaction[0].UserData.UserDataAssignment]
    assert keys == ["a", "b"], keys
    check(
        "InteractionRequestContact",
        soap12.InteractionRequestContact(Tenant=t, InteractionId=iid, ContactURI="voice://5551234/"),
        107000,
    )
    found = check("FindInteraction", service.FindInteraction(data={"Tenant": t, "Contact": "5551234"}), 107000)
    assert found.Data.Interactions.Interaction[0].Id == iid, found
    check(
        "ModifyInteraction",
        service.ModifyInteraction(
            data={
                "Tenant": t,
                "InteractionId": iid,
                "Action": "DataName",
                "Options": {"DataName": "crm", "DataValue": "42"},
            }
        ),
        107000,
    )
    check("InteractionOutboundConnected", service.InteractionOutboundConnected(Tenant=t, InteractionId=iid), 107000)
    check(
        "InteractionSendToQueue",
        service.InteractionSendToQueue(Tenant=t, InteractionId=iid, Reason="SpeakToAgent"),
        107000,
    )
    check(
        "InteractionDequeued",
        service.InteractionDequeued(Tenant=t, InteractionId=iid, Reason="AgentAnswered"),
        107000,
    )
    check(
        "InteractionCancelled(ended)",
        service.InteractionCancelled(Tenant=t, InteractionId=iid, CancelledBy="Caller"),
        108029,
    )

    added = check(
        "AddInteraction",
        service.AddInteraction(
            data={"Tenant": t, "Segment": seg, "Contact": "5550001", "Options": {"ClientId": "zeep-1"}}
        ),
        107000,
    )
    second = added.Data.Interactions.Interaction[0].Id
    check(
        "InteractionOutboundAttemptFailed",
        service.InteractionOutboundAttemptFailed(Tenant=t, InteractionId=second, Reason="Busy"),
        107000,
    )
    check(
        "InteractionCancelled",
        service.InteractionCancelled(Tenant=t, InteractionId=second, CancelledBy="Caller"),
        107000,
    )
    third = service.CreateInteraction(Tenant=t, Segment=seg).InteractionId
    check(
        "InteractionDisconnectedByCaller",
        service.InteractionDisconnectedByCaller(Tenant=t, InteractionId=third, Reason="Abandon"),
        107000,
    )
    fourth = service.CreateInteraction(Tenant=t, Segment=seg).InteractionId
    check(
        "InteractionDisconnectedByApplication",
        service.InteractionDisconnectedByApplication(Tenant=t, InteractionId=fourth, Reason="Other"),
        107000,
    )
    fifth = service.AddInteraction(data={"Tenant": t, "Segment": seg, "Contact": "5550002"})
    check(
        "RemoveInteraction",
        service.RemoveInteraction(
            data={
                "Tenant": t,
                "InteractionId": fifth.Data.Interactions.Interaction[0].Id,
                "Reason": "Web Canceled",
            }
        ),
        107000,
    )
    enumerations(client, validate, failures)
    failures.extend(validate.errors)
    print(f"{validate.checked} answers valid against the WSDL schema")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print("ok", ns is not None)


if __name__ == "__main__":
    main()
