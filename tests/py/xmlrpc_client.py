#!/usr/bin/env python3
"""Plays Voicenter against a running gateway with nothing but Python's own XML-RPC client.

Usage: xmlrpc_client.py http://127.0.0.1:PORT/voicenter/TENANT

The tenant's webhook receiver must answer decisions with
    {"action":"menu","prompt":"welcome","menu":"main","max_digits":4}
and events with any 2xx. Calls GET_IVR_ACTION, HANGUP_CALL and CDR (on the main URL and on
.../cdr, plus one resend) through `xmlrpc.client.ServerProxy` and checks the parsed answers.
Exit status 0 when every answer is as expected; 1 with the first mismatch on stderr.
"""

import socket
import sys
import time
import xmlrpc.client


class Mismatch(Exception):
    pass


def check(what, condition, got):
    if not condition:
        raise Mismatch(f"{what}: got {got!r}")


def main(argv):
    if len(argv) != 2:
        print("usage: xmlrpc_client.py http://HOST:PORT/voicenter/TENANT", file=sys.stderr)
        return 2
    url = argv[1].rstrip("/")
    socket.setdefaulttimeout(15)
    unique = f"py{int(time.time() * 1000)}"
    proxy = xmlrpc.client.ServerProxy(url)
    cdr_proxy = xmlrpc.client.ServerProxy(url + "/cdr")
    call_id = f"{unique}ivr0000000000000001"

    try:
        # §5.1: the IVR asks what to do; the customer's webhook answers a menu.
        answer = proxy.GET_IVR_ACTION(
            {
                "DID": "0730000000",
                "CALLER_ID": "0540000000",
                "CALLER_NAME": "017W",
                "IVR_UNIQUE_ID": call_id,
                "DTMF": "",
                "MENU": "-1",
                "PREVIOUS_MENU": "-1",
            }
        )
        print(f"GET_IVR_ACTION -> {answer!r}")
        check("GET_IVR_ACTION answer is a struct", isinstance(answer, dict), answer)
        check("GET_IVR_ACTION STATUS", answer.get("STATUS") == 0, answer.get("STATUS"))
        check("GET_IVR_ACTION ACTION", answer.get("ACTION") == "MENU", answer.get("ACTION"))
        data = answer.get("DATA")
        check("GET_IVR_ACTION DATA is a struct", isinstance(data, dict), data)
        size = data.get("SIZE")
        check("DATA.SIZE is an int", isinstance(size, int) and not isinstance(size, bool), size)
        check("DATA.SIZE", size == 4, size)
        check("DATA.MENU", data.get("MENU") == "main", data.get("MENU"))
        check("DATA.REC", data.get("REC") == "welcome", data.get("REC"))

        # §5.2: the call ends.
        answer = proxy.HANGUP_CALL(
            {
                "DID": "0730000000",
                "CALLER_ID": "0540000000",
                "IVR_UNIQUE_ID": call_id,
                "TARGET": "0500000555",
                "CALL_TIME_EPOCH": 1561684165,
                "CALL_START_EPOCH": 1561684161,
                "CALL_DURATION": 650,
                "CALL_DAILTIME": 15,
                "CALL_STATUS": "ANSWERED",
            }
        )
        print(f"HANGUP_CALL -> {answer!r}")
        check("HANGUP_CALL answer", answer == {"STATUS": 0}, answer)

        # §4: the CDR, on the main URL and on the CDR URL.
        def cdr(ivruniqueid, duration):
            return {
                "caller": "0540000000",
                "target": "0500000000",
                "time": 1345373417,
                "duration": duration,
                "ivruniqueid": ivruniqueid,
                "targetextension": "",
                "callerextension": "IuYtReWq",
                "did": "",
                "queueid": 0,
                "queuename": "",
                "type": "Extension Outgoing",
                "status": "ANSWER",
            }

        for name, target, body in [
            ("CDR (main URL)", proxy, cdr(call_id, 12)),
            ("CDR (cdr URL)", cdr_proxy, cdr(f"{unique}cdr0000000000000002", 7)),
            ("CDR resend (cdr URL)", cdr_proxy, cdr(f"{unique}cdr0000000000000002", 7)),
        ]:
            answer = target.CDR(body)
            print(f"{name} -> {answer!r}")
            check(f"{name} answer is a struct", isinstance(answer, dict), answer)
            check(f"{name} err", answer.get("err") == 0, answer.get("err"))
            check(f"{name} errdesc", answer.get("errdesc") == "OK", answer.get("errdesc"))
    except Mismatch as e:
        print(f"mismatch: {e}", file=sys.stderr)
        return 1
    except xmlrpc.client.Fault as e:
        print(f"XML-RPC fault {e.faultCode}: {e.faultString}", file=sys.stderr)
        return 1
    except xmlrpc.client.ProtocolError as e:
        print(f"HTTP error {e.errcode} {e.errmsg} from {e.url}", file=sys.stderr)
        return 1
    except (OSError, xmlrpc.client.Error) as e:
        print(f"request failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
