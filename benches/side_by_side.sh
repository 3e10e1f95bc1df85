#!/bin/sh
# The decision path measured from outside, beside nginx, in one run: wrk (16 connections,
# 30 s each by default) drives
#   1. nginx as a reverse proxy in front of a static receiver, and
#   2. ivrgate (the release binary, embedded store, defaults) whose decision URL is the same
#      static receiver,
# with the seed's GET_IVR_ACTION (XML-RPC) body, a distinct IVR_UNIQUE_ID per request. The
# receiver is nginx too (`return 200` with the menu answer), so both paths end at the same
# server. Prints each rate and ivrgate's share of nginx's.
#
#   cargo build --release --bin ivrgate
#   sh benches/side_by_side.sh [seconds] [connections]
#
# Installs wrk and nginx-light from Debian when missing (apt-get: run as root). Everything
# listens on 127.0.0.1 on free ports and is stopped at the end.
set -eu
secs="${1:-30}"
conns="${2:-16}"
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${IVRGATE_BIN:-$root/target/release/ivrgate}"
[ -x "$bin" ] || { echo "build it first: cargo build --release --bin ivrgate" >&2; exit 1; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi

work=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
receiver=$(port)
proxy=$(port)
gateway=$(port)
menu='{"action":"menu","prompt":"p","menu":"m","max_digits":1}'

mkdir -p "$work/nginx" "$work/state"
cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream receiver { server 127.0.0.1:$receiver; keepalive 64; }
    # The customer's decision webhook: answers a menu at once.
    server {
        listen 127.0.0.1:$receiver;
        location / { default_type application/json; return 200 '$menu'; }
    }
    # The baseline: a reverse proxy in front of it.
    server {
        listen 127.0.0.1:$proxy;
        location / {
            proxy_pass http://receiver/decide;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work/nginx"

cat >"$work/ivrgate.toml" <<CONF
listen = "127.0.0.1:$gateway"
state_dir = "$work/state"

[storage]
min_free_bytes = 0

[logging]
level = "warn"

[[tenants]]
id = "acme"
webhook_url = "http://127.0.0.1:$receiver/events"
decision_url = "http://127.0.0.1:$receiver/decide"
webhook_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
decisions_per_second = 100000
deliveries_per_second = 100000
CONF
"$bin" serve --config "$work/ivrgate.toml" >"$work/ivrgate.log" 2>&1 &
pids="$pids $!"
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$gateway),1)" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$work/ivrgate.log" >&2; exit 1; }; sleep 0.1
done

# The seed's request with IVR_UNIQUE_ID made distinct per request (wrk's Lua: a counter per
# thread, the thread's id in front).
python3 - "$root/tests/fixtures/voicenter/get_ivr_action.xmlrpc.xml" "$work/body.lua" <<'PY'
import sys
xml = open(sys.argv[1]).read()
name = xml.index("<name>IVR_UNIQUE_ID</name>")
start = xml.index("<string>", name) + len("<string>")
end = xml.index("</string>", start)
head, tail = xml[:start], xml[end:]
q = lambda s: "[==[" + s + "]==]"
open(sys.argv[2], "w").write(f"""
local head, tail = {q(head)}, {q(tail)}
local counter, prefix, threads = 0, "", {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  prefix = tostring(math.random(1, 1e9))
  misses = 0
end
function request()
  counter = counter + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "text/xml"}},
    head .. "sbs" .. prefix .. "-" .. counter .. tail)
end
-- An answer counts only when it carries the menu (nginx passes the JSON through, ivrgate
-- renders it as XML-RPC); a fallback would not.
function response(status, headers, body)
  if status ~= 200 or not (body:find("MENU", 1, true) or body:find('"menu"', 1, true)) then
    misses = misses + 1
  end
end
function done(summary, latency, requests)
  local m = 0
  for _, t in ipairs(threads) do m = m + t:get("misses") end
  io.write("answers without the menu: " .. m .. "\\n")
end
""")
PY

run() { # url -> req/s
    wrk -t2 -c"$conns" -d"${secs}s" -s "$work/body.lua" "$1" | tee -a "$work/wrk.log" |
        awk '/^Requests\/sec/ {print $2}'
}
# Both warmed briefly, then measured back to back.
wrk -t2 -c"$conns" -d2s -s "$work/body.lua" "http://127.0.0.1:$proxy/" >/dev/null
wrk -t2 -c"$conns" -d2s -s "$work/body.lua" "http://127.0.0.1:$gateway/voicenter/acme" >/dev/null
load_before=$(cut -d' ' -f1 /proc/loadavg)
nginx_rps=$(run "http://127.0.0.1:$proxy/")
ivrgate_rps=$(run "http://127.0.0.1:$gateway/voicenter/acme")
load_after=$(cut -d' ' -f1 /proc/loadavg)
echo "side by side ($(nproc) cores, wrk $conns connections, ${secs} s each, load average $load_before before, $load_after after)"
printf '%-44s %10s req/s\n' "nginx reverse proxy -> static receiver" "$nginx_rps"
printf '%-44s %10s req/s\n' "ivrgate decision path -> static receiver" "$ivrgate_rps"
python3 -c "print('%-44s %10.2f' % ('ivrgate / nginx', $ivrgate_rps / $nginx_rps))"
grep -h "answers without\|Non-2xx\|Socket errors" "$work/wrk.log" || true
