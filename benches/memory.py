#!/usr/bin/env python3
"""Peak memory of the gateway under large request bodies.

Starts the built binary (release by default) once per scenario with a fresh state directory
and a webhook receiver in this process, fires the scenario's requests all at once, waits for
their answers and for the stored events' deliveries, and reads the gateway's peak resident
set size (VmHWM in /proc/PID/status). Prints one table row per scenario.

    cargo build --release --bin ivrgate
    python3 benches/memory.py                         # every scenario
    python3 benches/memory.py --only json-300 xmlrpc-50mb
    python3 benches/memory.py --binary target/debug/ivrgate

Scenarios (default settings unless named):
  json-300      300 concurrent 1 MiB Voicenter JSON CDRs (POST /voicenter/acme/cdr)
  xmlrpc-300    300 concurrent 1 MiB Voicenter XML-RPC CDRs
  ptk-300       300 concurrent 1 MiB PTK SOAP 1.1 AddInteraction with UserData
  json-100      100 concurrent 1 MiB JSON CDRs
  xmlrpc-50mb   one 50 MB XML-RPC CDR, max_body_bytes = 64 MiB (many 1 KiB members)
  xmlrpc-50mb-1 one 50 MB XML-RPC CDR, max_body_bytes = 64 MiB (one 50 MB member)
Answers are sorted into ok (stored), busy (the platform's try-again) and other.
"""

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
FIELD = 200  # bytes of text per field in the 1 MiB bodies


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def filler(i, n):
    base = f"value {i} " + "x" * n
    return base[:n]


def json_cdr(call, size):
    parts = [f'{{"ivruniqueid":"{call}","caller":"0541234567","status":"ANSWER","queueid":7']
    used = len(parts[0]) + 1
    i = 0
    while used + FIELD + 20 < size:
        item = f',"field{i:05d}":"{filler(i, FIELD)}"'
        parts.append(item)
        used += len(item)
        i += 1
    parts.append("}")
    return "".join(parts).encode()


def xmlrpc_cdr(call, size, field=FIELD):
    head = (
        '<?xml version="1.0"?><methodCall><methodName>CDR</methodName><params><param><value>'
        f"<struct><member><name>ivruniqueid</name><value><string>{call}</string></value></member>"
        "<member><name>status</name><value><string>ANSWER</string></value></member>"
    )
    tail = "</struct></value></param></params></methodCall>"
    parts = [head]
    used = len(head) + len(tail)
    i = 0
    while True:
        item = f"<member><name>field{i:05d}</name><value><string>{filler(i, field)}</string></value></member>"
        if used + len(item) > size:
            break
        parts.append(item)
        used += len(item)
        i += 1
    parts.append(tail)
    return "".join(parts).encode()


def xmlrpc_one_field(call, size):
    head = (
        '<?xml version="1.0"?><methodCall><methodName>CDR</methodName><params><param><value>'
        f"<struct><member><name>ivruniqueid</name><value><string>{call}</string></value></member>"
        "<member><name>transcript</name><value><string>"
    )
    tail = "</string></value></member></struct></value></param></params></methodCall>"
    return (head + "y" * (size - len(head) - len(tail)) + tail).encode()


def ptk_add(n, size):
    head = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        '<AddInteraction xmlns="urn:ivrgate:bench:ptk"><Tenant>Bench</Tenant>'
        f"<Segment>Bench</Segment><Contact>555{n:07d}</Contact><Options><UserDataContainer>"
    )
    tail = "</UserDataContainer></Options></AddInteraction></s:Body></s:Envelope>"
    parts = [head]
    used = len(head) + len(tail)
    i = 0
    while True:
        item = (
            f"<UserDataAssignment><Key>k{i:05d}</Key><Value><StringValue>{filler(i, FIELD)}"
            "</StringValue></Value></UserDataAssignment>"
        )
        if used + len(item) > size:
            break
        parts.append(item)
        used += len(item)
        i += 1
    parts.append(tail)
    return "".join(parts).encode()


def config(port, hook_port, state, max_body):
    return f"""
listen = "127.0.0.1:{port}"
state_dir = "{state}"

[server]
max_body_bytes = {max_body}

[storage]
min_free_bytes = 0

[logging]
level = "warn"

[[tenants]]
id = "acme"
webhook_url = "http://127.0.0.1:{hook_port}/hooks"
webhook_secret = "{SECRET}"
outbox_quota = 1000000

[tenants.ptk]
tenants = ["Bench"]
target_namespace = "urn:ivrgate:bench:ptk"
licences = 100000
licence_requests_per_window = 100000

[[tenants.ptk.segments]]
tenant = "Bench"
name = "Bench"
queue = "Bench"
"""


class Receiver:
    """A webhook endpoint that reads each delivery and answers 200."""

    def __init__(self):
        self.delivered = 0

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while length:
                    chunk = await reader.read(min(length, 1 << 20))
                    if not chunk:
                        return
                    length -= len(chunk)
                self.delivered += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def post(port, path, content_type, body):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
        )
        writer.write(body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        data = await reader.read()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        return status, data.split(b"\r\n\r\n", 1)[-1]
    except ConnectionError:
        return 0, b""
    finally:
        writer.close()


def classify(status, body):
    if status == 200 and (b'"err":0' in body or b"<int>0</int>" in body or b"<Code>107000" in body):
        return "ok"
    if b'"err":2' in body or (b"err" in body and b"<int>2</int>" in body):
        return "busy"
    if b"BandwidthExceeded" in body or b"-400" in body:
        return "busy"
    return "other"


def vmhwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def vmrss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


SCENARIOS = {
    "json-300": dict(n=300, kind="json", size=MIB - 64, max_body=MIB),
    "xmlrpc-300": dict(n=300, kind="xmlrpc", size=MIB - 64, max_body=MIB),
    "ptk-300": dict(n=300, kind="ptk", size=MIB - 64, max_body=MIB),
    "json-100": dict(n=100, kind="json", size=MIB - 64, max_body=MIB),
    "xmlrpc-50mb": dict(n=1, kind="xmlrpc-big", size=50_000_000, max_body=64 * MIB),
    "xmlrpc-50mb-1": dict(n=1, kind="xmlrpc-one", size=50_000_000, max_body=64 * MIB),
}


def bodies(kind, n, size):
    if kind == "json":
        return [("/voicenter/acme/cdr", "application/json", json_cdr(f"M{i:06d}", size)) for i in range(n)]
    if kind == "xmlrpc":
        return [("/voicenter/acme/cdr", "text/xml", xmlrpc_cdr(f"M{i:06d}", size)) for i in range(n)]
    if kind == "xmlrpc-big":
        return [("/voicenter/acme/cdr", "text/xml", xmlrpc_cdr("BIG1", size, field=1024))]
    if kind == "xmlrpc-one":
        return [("/voicenter/acme/cdr", "text/xml", xmlrpc_one_field("BIG2", size))]
    if kind == "ptk":
        return [("/ptk/acme", "text/xml; charset=utf-8", ptk_add(i, size)) for i in range(n)]
    raise ValueError(kind)


async def run(binary, name, spec):
    requests = bodies(spec["kind"], spec["n"], spec["size"])
    state = tempfile.mkdtemp(prefix="ivrgate-mem-")
    receiver = Receiver()
    hook = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, limit=1 << 20)
    hook_port = hook.sockets[0].getsockname()[1]
    port = free_port()
    path = os.path.join(state, "ivrgate.toml")
    with open(path, "w") as f:
        f.write(config(port, hook_port, state, spec["max_body"]))
    proc = subprocess.Popen(
        [binary, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(200):
            try:
                status, _ = await post(port, "/healthz", "text/plain", b"")
                if status:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.05)
        idle = vmrss(proc.pid)
        started = time.monotonic()
        answers = await asyncio.gather(*(post(port, p, ct, b) for p, ct, b in requests))
        elapsed = time.monotonic() - started
        counts = {"ok": 0, "busy": 0, "other": 0}
        for status, body in answers:
            counts[classify(status, body)] += 1
        deadline = time.monotonic() + 120
        while receiver.delivered < counts["ok"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        peak = vmhwm(proc.pid)
        if proc.poll() is not None:
            counts["other"] = f"{counts['other']} (exited {proc.returncode})"
        return dict(
            name=name,
            n=spec["n"],
            size=spec["size"],
            idle=idle,
            peak=peak,
            elapsed=elapsed,
            delivered=receiver.delivered,
            **counts,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        hook.close()
        shutil.rmtree(state, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/ivrgate")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    print(f"# {args.binary}; {platform.node()} {os.uname().release}, nproc {os.cpu_count()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'scenario':<14} {'requests':>8} {'body':>9} {'ok':>4} {'busy':>4} {'other':>5} "
          f"{'delivered':>9} {'idle RSS':>9} {'peak RSS':>9} {'peak/body':>9} {'time':>6}")
    for name in names:
        r = asyncio.run(run(args.binary, name, SCENARIOS[name]))
        ratio = f"{r['peak'] / r['size']:.2f}" if r["n"] == 1 else "-"
        print(f"{r['name']:<14} {r['n']:>8} {r['size'] / MIB:>7.1f}Mi {r['ok']:>4} {r['busy']:>4} "
              f"{str(r['other']):>5} {r['delivered']:>9} {r['idle'] / MIB:>7.1f}Mi "
              f"{r['peak'] / MIB:>7.1f}Mi {ratio:>9} {r['elapsed']:>5.1f}s",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
