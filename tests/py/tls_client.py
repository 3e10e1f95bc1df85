#!/usr/bin/env python3
"""A TLS client for the listener tests, on Python's own ssl module (OpenSSL's client, not
rustls): reads one command per line on stdin and answers each with one JSON line on stdout.

usage: tls_client.py HOST PORT CA_FILE [--cert FILE --key FILE] [--tls-min V] [--tls-max V]
                     [--ciphers SPEC]

V is 1.1, 1.2 or 1.3. Commands:
  connect                       open a new connection (the handshake); answers
                                {"ok", "version", "cipher", "cert_sha256"} or {"ok": false, "error"}
  request METHOD PATH [FILE]    one HTTP/1.1 request on the open connection (keep-alive), the
                                body read from FILE; answers {"ok", "status", "body", "cert_sha256"}

Every socket operation has a 10 s timeout, so every command answers.
"""

import argparse
import hashlib
import http.client
import json
import ssl
import sys
import warnings

# Python deprecates TLS 1.1; offering it is the point of one test.
warnings.filterwarnings("ignore", category=DeprecationWarning)

VERSIONS = {
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=args.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if "1.1" in (args.tls_min, args.tls_max):
        # OpenSSL's default security level refuses to offer TLS 1.1 at all: lower it, so
        # the refusal the test sees is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if args.tls_min:
        ctx.minimum_version = VERSIONS[args.tls_min]
    if args.tls_max:
        ctx.maximum_version = VERSIONS[args.tls_max]
    if args.ciphers:
        ctx.set_ciphers(args.ciphers)
    return ctx


def fingerprint(conn):
    der = conn.sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--tls-min", choices=VERSIONS)
    parser.add_argument("--tls-max", choices=VERSIONS)
    parser.add_argument("--ciphers")
    args = parser.parse_args()
    ctx = context(args)
    conn = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "connect":
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPSConnection(args.host, args.port, context=ctx, timeout=10)
                conn.connect()
                answer = {
                    "ok": True,
                    "version": conn.sock.version(),
                    "cipher": conn.sock.cipher()[0],
                    "alpn": conn.sock.selected_alpn_protocol(),
                    "cert_sha256": fingerprint(conn),
                }
            elif words[0] == "request":
                method, path = words[1], words[2]
                body = open(words[3], "rb").read() if len(words) > 3 else None
                headers = {"Content-Type": "application/json"} if body else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                answer = {
                    "ok": True,
                    "status": response.status,
                    "body": response.read().decode("utf-8", "replace"),
                    "cert_sha256": fingerprint(conn),
                }
            else:
                answer = {"ok": False, "error": f"unknown command {words[0]!r}"}
        except (OSError, http.client.HTTPException, AttributeError) as e:
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
