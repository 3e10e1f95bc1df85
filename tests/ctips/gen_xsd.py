#!/usr/bin/env python3
"""Writes the XML Schemas and the callback-service WSDL of CTIPS from tests/ctips/WIRE.md.

An independent check of every CTIPS message, written from the wire reference rather than from
ivrgate's or the simulator's code. Run from the repository root (the outputs are committed):

    python3 tests/ctips/gen_xsd.py

Outputs, in tests/ctips/:
  arrays.xsd             http://schemas.microsoft.com/2003/10/Serialization/Arrays (int, long, string arrays)
  commondata.xsd         .../commondata/2009/08: UserCredentials, CTICallDataItem, every enum
  ctipsapi.xsd           .../ctipsapi/2009/08: request contracts, operation wrappers and replies,
                         SessionObject, CTIPortalServiceFault
  clientpublishapi.xsd   .../clientpublishapi/2009/08: CTIEvent and every event (by extension, base
                         first, as DataContractSerializer writes them), the callback operations
  ctips.xsd              imports the four (what tests/py/ctips_validate.py loads)
  CTIEventService.wsdl   the client's callback service (PublishCTIEvent, Heartbeat, StartSession),
                         SOAP 1.1 document/literal, for zeep (tests/py/ctips_publish.py)

Conventions (WCF DataContract schemas): elementFormDefault qualified; a member marked * in WIRE.md
is minOccurs=1, others minOccurs=0; strings, arrays and contracts are nillable; enums are string
restrictions in the commondata namespace.
"""

import os
import re
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
WIRE = os.path.join(HERE, "WIRE.md")

NS = {
    "api": "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08",
    "pub": "http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08",
    "cd": "http://www.aspect.com/unifiedip/edk/commondata/2009/08",
    "arr": "http://schemas.microsoft.com/2003/10/Serialization/Arrays",
}
FILES = {"api": "ctipsapi.xsd", "pub": "clientpublishapi.xsd", "cd": "commondata.xsd", "arr": "arrays.xsd"}
XSD = "http://www.w3.org/2001/XMLSchema"


def parse_members(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, ty = part.split(":", 1)
        required = name.endswith("*")
        out.append((name.rstrip("*"), ty.strip(), required))
    return out


def read_wire():
    ops, events, contracts, enums = [], {}, {}, {}
    section, cur = None, None
    for line in open(WIRE, encoding="utf-8").read().splitlines():
        if line.startswith("## "):
            section = line[3:]
            continue
        if section is None:
            continue
        if section.startswith(("AgentCallService", "CTIEventService")):
            service = "callback" if section.startswith("CTIEventService") else "ctips"
            m = re.match(r"^- (\w+)\((.*)\) -> (\w+)", line)
            if m:
                cur = {"name": m.group(1), "params": m.group(2), "returns": m.group(3),
                       "service": service, "action": None, "contract": None}
                ops.append(cur)
                continue
            m = re.match(r"^\s+Action: (\S+)", line)
            if m and cur:
                cur["action"] = m.group(1)
                continue
            m = re.match(r"^\s+(\w+) \[(\w+)\]: (.*)$", line)
            if m and cur and cur["contract"] is None:
                cur["contract"] = m.group(1)
                contracts.setdefault(m.group(1), (m.group(2), parse_members(m.group(3))))
        elif section.startswith("Events"):
            m = re.match(r"^- (CTI\w+): (.*)$", line)
            if m:
                events[m.group(1)] = parse_members(m.group(2))
        elif section.startswith("Other data contracts"):
            m = re.match(r"^- (\w+) \[(\w+)\]: (.*)$", line)
            if m:
                contracts[m.group(1)] = (m.group(2), parse_members(m.group(3)))
        elif section.startswith("Enums"):
            m = re.match(r"^- (\w+): (.*)$", line)
            if m:
                enums[m.group(1)] = [v.split("=")[0].strip() for v in m.group(2).split(",") if "=" in v]
    return ops, events, contracts, enums


OPS, EVENTS, CONTRACTS, ENUMS = read_wire()
# CTIEvent is the polymorphic base (declared with PublishCTIEvent's parameter); CTIFilter adds
# SwitchId, ServiceId, AgentId and is the base of every event but CTISnapShotUpdate.
BASE = CONTRACTS.pop("CTIEvent")[1]
FILTER_EXTRA = [m for m in EVENTS["CTIFilter"] if m[0] not in {b[0] for b in BASE}]


def ns_of_type(ty):
    """(ns key, XSD type local name) of a WIRE.md type."""
    if ty.endswith("[]"):
        inner = ty[:-2]
        ins, _ = ns_of_type(inner)
        if inner in ("int", "long", "string"):
            return "arr", "ArrayOf" + inner
        return ins, "ArrayOf" + inner
    if ty in ("int", "long", "string"):
        return "xs", ty
    if ty == "bool":
        return "xs", "boolean"
    if ty in ENUMS:
        return "cd", ty
    if ty in CONTRACTS:
        return CONTRACTS[ty][0], ty
    if ty in EVENTS or ty == "CTIEvent":
        return "pub", ty
    raise SystemExit(f"unknown type {ty}")


ARRAYS = {}  # (ns key, ArrayOfX) -> item type


def note_array(ty):
    if ty.endswith("[]"):
        ns, name = ns_of_type(ty)
        ARRAYS[(ns, name)] = ty[:-2]


def element(name, ty, required, indent="      "):
    note_array(ty)
    ns, local = ns_of_type(ty)
    prefix = "xs" if ns == "xs" else ns
    nillable = ty == "string" or ty.endswith("[]") or ns not in ("xs", "cd") or (ns == "cd" and ty in CONTRACTS)
    attrs = f'name="{name}" type="{prefix}:{local}" minOccurs="{1 if required else 0}"'
    if nillable:
        attrs += ' nillable="true"'
    return f"{indent}<xs:element {attrs}/>"


def header(key, imports):
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             "<!-- @generated by tests/ctips/gen_xsd.py from tests/ctips/WIRE.md: do not edit. -->",
             f'<xs:schema xmlns:xs="{XSD}" targetNamespace="{NS[key]}" elementFormDefault="qualified"']
    for k, v in NS.items():
        lines[-1] += f'\n    xmlns:{k}="{v}"'
    lines[-1] += ">"
    for k in imports:
        lines.append(f'  <xs:import namespace="{NS[k]}" schemaLocation="{FILES[k]}"/>')
    return lines


def complex_type(name, members, base=None):
    out = [f'  <xs:complexType name="{name}">']
    if base:
        out += ["    <xs:complexContent>", f'      <xs:extension base="{base}">', "        <xs:sequence>"]
        out += [element(n, t, r, "          ") for n, t, r in members]
        out += ["        </xs:sequence>", "      </xs:extension>", "    </xs:complexContent>"]
    else:
        out.append("    <xs:sequence>")
        out += [element(n, t, r) for n, t, r in members]
        out.append("    </xs:sequence>")
    out.append("  </xs:complexType>")
    return out


def build():
    files = {}
    # clientpublishapi: events, CTIEvent hierarchy, other pub contracts, callback operations
    pub = header("pub", ["cd", "arr"])
    pub += complex_type("CTIEvent", BASE)
    pub += complex_type("CTIFilter", FILTER_EXTRA, "pub:CTIEvent")
    base_names = [m[0] for m in BASE]
    filter_names = base_names + [m[0] for m in FILTER_EXTRA]
    for name, members in sorted(EVENTS.items()):
        if name == "CTIFilter":
            continue
        names = [m[0] for m in members]
        if names[: len(filter_names)] == filter_names:
            pub += complex_type(name, members[len(filter_names):], "pub:CTIFilter")
        elif names[: len(base_names)] == base_names:
            pub += complex_type(name, members[len(base_names):], "pub:CTIEvent")
        else:
            raise SystemExit(f"{name} does not start with the CTIEvent members")
    for name, (ns, members) in sorted(CONTRACTS.items()):
        if ns == "pub":
            pub += complex_type(name, members)
    for op in OPS:
        if op["service"] != "callback":
            continue
        pub.append(f'  <xs:element name="{op["name"]}">')
        pub.append("    <xs:complexType><xs:sequence>")
        for param in [p.strip() for p in op["params"].split(",") if p.strip()]:
            ty, pname = param.rsplit(" ", 1)
            ty = ty.split(".")[-1]
            ty = {"string": "string"}.get(ty, ty)
            pub.append(element(pname, ty, False))
        pub.append("    </xs:sequence></xs:complexType>")
        pub.append("  </xs:element>")
        pub.append(f'  <xs:element name="{op["name"]}Response">')
        pub.append("    <xs:complexType><xs:sequence>")
        pub.append(f'      <xs:element name="{op["name"]}Result" type="xs:int" minOccurs="0"/>')
        pub.append("    </xs:sequence></xs:complexType>")
        pub.append("  </xs:element>")
    # ctipsapi: request contracts, operation wrappers, replies
    api = header("api", ["cd", "arr"])
    for name, (ns, members) in sorted(CONTRACTS.items()):
        if ns == "api":
            api += complex_type(name, members)
    for op in OPS:
        if op["service"] != "ctips":
            continue
        api.append(f'  <xs:element name="{op["name"]}">')
        api.append("    <xs:complexType><xs:sequence>")
        api.append(f'      <xs:element name="args" type="api:{op["contract"]}" minOccurs="0" nillable="true"/>')
        api.append("    </xs:sequence></xs:complexType>")
        api.append("  </xs:element>")
        rtype = "api:SessionObject" if op["returns"] == "SessionObject" else "xs:int"
        nil = ' nillable="true"' if op["returns"] == "SessionObject" else ""
        api.append(f'  <xs:element name="{op["name"]}Response">')
        api.append("    <xs:complexType><xs:sequence>")
        api.append(f'      <xs:element name="{op["name"]}Result" type="{rtype}" minOccurs="0"{nil}/>')
        api.append("    </xs:sequence></xs:complexType>")
        api.append("  </xs:element>")
    api.append('  <xs:element name="CTIPortalServiceFault" type="api:CTIPortalServiceFault" nillable="true"/>')
    # commondata: cd contracts and enums
    cd = header("cd", ["arr", "pub"])
    for name, (ns, members) in sorted(CONTRACTS.items()):
        if ns == "cd":
            cd += complex_type(name, members)
    for name, values in sorted(ENUMS.items()):
        cd.append(f'  <xs:simpleType name="{name}">')
        cd.append('    <xs:restriction base="xs:string">')
        cd += [f'      <xs:enumeration value="{escape(v)}"/>' for v in values]
        cd.append("    </xs:restriction>")
        cd.append("  </xs:simpleType>")
    # array types, each in its item's namespace
    arr = header("arr", [])
    by_ns = {"pub": pub, "api": api, "cd": cd, "arr": arr}
    for (ns, name), item in sorted(ARRAYS.items()):
        ins, ilocal = ns_of_type(item)
        iprefix = "xs" if ins == "xs" else ins
        item_name = item
        nil = ' nillable="true"' if item == "string" or ins in ("pub", "api") or item in CONTRACTS else ""
        by_ns[ns] += [f'  <xs:complexType name="{name}">', "    <xs:sequence>",
                      f'      <xs:element name="{item_name}" type="{iprefix}:{ilocal}" minOccurs="0" maxOccurs="unbounded"{nil}/>',
                      "    </xs:sequence>", "  </xs:complexType>"]
    for key, lines in by_ns.items():
        files[FILES[key]] = "\n".join(lines + ["</xs:schema>", ""])
    # the umbrella schema
    files["ctips.xsd"] = "\n".join(
        ['<?xml version="1.0" encoding="utf-8"?>',
         "<!-- @generated by tests/ctips/gen_xsd.py: imports every CTIPS namespace. -->",
         f'<xs:schema xmlns:xs="{XSD}" elementFormDefault="qualified">']
        + [f'  <xs:import namespace="{NS[k]}" schemaLocation="{FILES[k]}"/>' for k in ("api", "pub", "cd", "arr")]
        + ["</xs:schema>", ""])
    files["CTIEventService.wsdl"] = wsdl()
    return files


def wsdl():
    ops = [o for o in OPS if o["service"] == "callback"]
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           "<!-- @generated by tests/ctips/gen_xsd.py from tests/ctips/WIRE.md: the client's callback service. -->",
           '<wsdl:definitions name="CTIEventService"',
           '    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"',
           '    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"',
           f'    xmlns:xs="{XSD}"',
           f'    xmlns:pub="{NS["pub"]}"',
           f'    targetNamespace="{NS["pub"]}">',
           "  <wsdl:types>",
           f'    <xs:schema xmlns:xs="{XSD}" elementFormDefault="qualified">',
           f'      <xs:import namespace="{NS["pub"]}" schemaLocation="clientpublishapi.xsd"/>',
           "    </xs:schema>",
           "  </wsdl:types>"]
    for op in ops:
        for suffix, el in (("Request", op["name"]), ("Response", op["name"] + "Response")):
            out += [f'  <wsdl:message name="CTIEventService_{op["name"]}_{suffix}">',
                    f'    <wsdl:part name="parameters" element="pub:{el}"/>',
                    "  </wsdl:message>"]
    out.append('  <wsdl:portType name="CTIEventService">')
    for op in ops:
        out += [f'    <wsdl:operation name="{op["name"]}">',
                f'      <wsdl:input message="pub:CTIEventService_{op["name"]}_Request"/>',
                f'      <wsdl:output message="pub:CTIEventService_{op["name"]}_Response"/>',
                "    </wsdl:operation>"]
    out.append("  </wsdl:portType>")
    out += ['  <wsdl:binding name="BasicHttpBinding_CTIEventService" type="pub:CTIEventService">',
            '    <soap:binding transport="http://schemas.xmlsoap.org/soap/http" style="document"/>']
    for op in ops:
        out += [f'    <wsdl:operation name="{op["name"]}">',
                f'      <soap:operation soapAction="{op["action"]}" style="document"/>',
                '      <wsdl:input><soap:body use="literal"/></wsdl:input>',
                '      <wsdl:output><soap:body use="literal"/></wsdl:output>',
                "    </wsdl:operation>"]
    out.append("  </wsdl:binding>")
    out += ['  <wsdl:service name="CTIEventService">',
            '    <wsdl:port name="BasicHttpBinding_CTIEventService" binding="pub:BasicHttpBinding_CTIEventService">',
            '      <soap:address location="http://localhost/ctips/callback"/>',
            "    </wsdl:port>",
            "  </wsdl:service>",
            "</wsdl:definitions>", ""]
    return "\n".join(out)


def main():
    files = build()
    check = "--check" in sys.argv
    stale = []
    for name, text in files.items():
        path = os.path.join(HERE, name)
        if check:
            if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("stale (run tests/ctips/gen_xsd.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(OPS)} operations, {len(EVENTS)} events, {len(CONTRACTS)} contracts, {len(ENUMS)} enums",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
