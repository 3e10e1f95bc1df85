"""Validates CTIPS messages against the XML Schemas written from WIRE.md (tests/ctips/*.xsd).

Usage: ctips_validate.py FILE...
Each FILE holds one SOAP 1.1 envelope (a request ivrgate sent, as the simulator's request log
keeps it, or an event the simulator published) or a bare operation element. The first element of
the Body is validated with lxml against tests/ctips/ctips.xsd: namespaces, element order,
required members, enum names and value types, xsi:type polymorphism of events.
Prints one line per file; exits 1 when any file is invalid, 2 on a usage or read error.
"""

import os
import sys

from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "ctips", "ctips.xsd")


def payload(doc):
    root = doc.getroot()
    if etree.QName(root).namespace == SOAP and etree.QName(root).localname == "Envelope":
        body = root.find(f"{{{SOAP}}}Body")
        if body is None or len(body) == 0:
            raise ValueError("SOAP envelope without a Body element")
        return body[0]
    return root


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    schema = etree.XMLSchema(etree.parse(SCHEMA))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    bad = 0
    for path in argv:
        try:
            doc = etree.parse(path, parser)
            if doc.docinfo.doctype:
                raise ValueError("DOCTYPE is not allowed")
            el = payload(doc)
        except (OSError, ValueError, etree.XMLSyntaxError) as e:
            print(f"ERROR {path}: {e}")
            return 2
        name = etree.QName(el).localname
        if schema.validate(etree.ElementTree(el)):
            print(f"OK {path} {name}")
        else:
            bad += 1
            for err in schema.error_log:
                print(f"INVALID {path} {name}: line {err.line}: {err.message}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
