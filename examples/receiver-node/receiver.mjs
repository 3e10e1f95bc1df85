#!/usr/bin/env node
// A webhook receiver for ivrgate in Node.js 20, standard library only (node:http,
// node:crypto). The same behaviour and interface as examples/receiver.py:
//
//   node examples/receiver-node/receiver.mjs [--listen HOST:PORT]   # default 127.0.0.1:9000
//   node examples/receiver-node/receiver.mjs verify ID TIMESTAMP SIGNATURES < body
//
// The secret is WEBHOOK_SECRET (default: the webhook_secret of config/minimal.toml). Every
// request is checked as Standard Webhooks says: the signature over `{id}.{timestamp}.{body}`
// (any of the space-separated `v1,` signatures may match; lengths first, then a constant-time
// compare) and a webhook-timestamp at most 5 minutes from this machine's clock. A webhook-id
// already processed is answered 2xx again (a decision with the same answer) and not processed
// twice. `verify` checks one signature without the timestamp tolerance (for test vectors).

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";

const DEFAULT_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const DEFAULT_LISTEN = "127.0.0.1:9000";
const TOLERANCE_S = 5 * 60;
const REMEMBERED_IDS = 10000;
const MAX_BODY = 1024 * 1024;

function fail(message) {
  process.stderr.write(`receiver: ${message}\n`);
  process.exit(2);
}

function keyOf(secret) {
  if (!secret.startsWith("whsec_")) fail("WEBHOOK_SECRET must start with whsec_");
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  if (key.length === 0) fail("WEBHOOK_SECRET holds no base64 key after whsec_");
  return key;
}

/** Whether any of the space-separated signatures is ours for (id, timestamp, body). */
function signatureMatches(key, id, timestamp, body, header) {
  const mac = createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest();
  const expected = Buffer.from(`v1,${mac.toString("base64")}`);
  return header.split(" ").some((candidate) => {
    const given = Buffer.from(candidate);
    // timingSafeEqual needs equal lengths; a bare "v1," must never match.
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

/** The answer to a decision: a valid action for each Voicenter decision point. */
function decide(payload) {
  switch (payload.data?.kind) {
    case "ivr_action":
      return { action: "menu", prompt: "welcome", menu: "main", max_digits: 1, attach: { crm_id: "A-17" } };
    case "layer_input":
      return { action: "goto", target: "1", attach: { crm_id: "A-17" } };
    case "caller_lookup":
      return { action: "lookup_result", found: true, name: "Demo Caller", url: "https://crm.example/c/A-17" };
    default:
      return { action: "default" };
  }
}

function parseArgs(argv) {
  if (argv[0] === "verify") {
    if (argv.length !== 4) fail("usage: receiver.mjs verify ID TIMESTAMP SIGNATURES < body");
    return { verify: argv.slice(1) };
  }
  let listen = DEFAULT_LISTEN;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--listen" && i + 1 < argv.length) listen = argv[++i];
    else fail(`unknown argument ${argv[i]}; usage: receiver.mjs [--listen HOST:PORT]`);
  }
  const colon = listen.lastIndexOf(":");
  const port = Number(listen.slice(colon + 1));
  if (colon < 1 || !Number.isInteger(port) || port < 0 || port > 65535) fail(`--listen ${listen} is not HOST:PORT`);
  return { host: listen.slice(0, colon).replace(/^\[|\]$/g, ""), port, listen };
}

const args = parseArgs(process.argv.slice(2));
const secret = process.env.WEBHOOK_SECRET || DEFAULT_SECRET;
const key = keyOf(secret);

if (args.verify) {
  const [id, timestamp, signatures] = args.verify;
  const ok = signatureMatches(key, id, timestamp, readFileSync(0), signatures);
  console.log(ok ? "ok" : "bad");
  process.exit(ok ? 0 : 1);
}

// webhook-id -> the answer body already given; oldest forgotten first.
const processed = new Map();

function reply(res, status, body) {
  const out = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "content-type": "application/json", "content-length": out.length });
  res.end(out);
}

function handle(req, body, res) {
  const id = req.headers["webhook-id"];
  const timestamp = req.headers["webhook-timestamp"];
  const signatures = req.headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    console.log(`refused id=${id || "-"}: missing webhook-id, webhook-timestamp or webhook-signature`);
    return reply(res, 400, { error: "missing Standard Webhooks headers" });
  }
  if (!signatureMatches(key, id, timestamp, body, signatures)) {
    console.log(`refused id=${id}: signature=BAD`);
    return reply(res, 401, { error: "bad signature" });
  }
  const age = Math.floor(Date.now() / 1000) - Number(timestamp);
  if (!/^\d+$/.test(timestamp) || Math.abs(age) > TOLERANCE_S) {
    console.log(`refused id=${id}: webhook-timestamp ${timestamp} is more than ${TOLERANCE_S} s from now`);
    return reply(res, 401, { error: "timestamp outside tolerance" });
  }
  if (processed.has(id)) {
    console.log(`duplicate id=${id}: already processed, answered again`);
    return reply(res, 200, processed.get(id));
  }
  let payload;
  try {
    payload = JSON.parse(body.toString("utf8"));
  } catch (e) {
    console.log(`refused id=${id}: body is not JSON (${e.message})`);
    return reply(res, 400, { error: "body is not JSON" });
  }
  const type = String(payload.type);
  console.log(`${type}  id=${id}  signature=ok`);
  console.log(JSON.stringify(payload.data, null, 2));
  const answer = type.startsWith("decision.") ? decide(payload) : {};
  processed.set(id, answer);
  if (processed.size > REMEMBERED_IDS) processed.delete(processed.keys().next().value);
  reply(res, 200, answer);
}

const server = createServer((req, res) => {
  if (req.method !== "POST") return reply(res, 405, { error: "POST only" });
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      reply(res, 413, { error: "body too large" });
      req.destroy();
    } else chunks.push(chunk);
  });
  req.on("end", () => {
    if (size <= MAX_BODY) handle(req, Buffer.concat(chunks), res);
  });
});

server.on("error", (e) => {
  process.stderr.write(`cannot listen on ${args.listen}: ${e.code} (is another receiver still running?)\n`);
  process.exit(1);
});
server.listen(args.port, args.host, () => {
  const where = args.listen === DEFAULT_LISTEN ? " (the webhook_url of config/minimal.toml)" : "";
  const which = process.env.WEBHOOK_SECRET ? "WEBHOOK_SECRET" : "its webhook_secret";
  console.log(`listening on http://${args.listen}/hooks${where}, verifying with ${which}; Ctrl-C stops`);
});
process.on("SIGINT", () => {
  console.log("stopped");
  process.exit(0);
});
