#!/usr/bin/env bash
# Side-by-side: a cairn relay against nginx on the same machine, in the same
# run, same sizes, same load. Prints each figure and the ratio cairn/nginx.
#
#   bash bench/compare.sh [SECONDS]       (default 10 s per wrk run)
#
# Needs nginx (Debian nginx-full: WebDAV PUT) and wrk:
#   apt-get install -y nginx-full wrk
#
# GET: wrk, 2 threads; 64 connections for 1 KiB, 4 for 64 MiB.
# PUT: cairn-bench (wrk cannot sign cairn's upload tokens), the same request
# pattern for both: distinct blobs, 64 in flight for 1 KiB, 2 for 64 MiB.
# cairn's PUT is durable (acknowledged after syncfs + index commit); nginx's
# WebDAV PUT never fsyncs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y nginx-full wrk" >&2; exit 2; }
done
export RUST_BACKTRACE=0
cargo build --release -q -p cairn-relay -p cairn-bench
bin=target/release
work=$(mktemp -d /tmp/cairn-compare.XXXXXX)
relay_port=17071
nginx_port=17072
cleanup() {
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/cairn-relay" serve --data "$work/relay" --listen "127.0.0.1:$relay_port" \
  --addr-rate 0 --key-rate 0 --key-quota 0 --capacity 200G --max-blob-size 1G \
  --max-uploads 1024 2>"$work/relay.log" &
relay_pid=$!

mkdir -p "$work/www/dav" "$work/tmp"
cat >"$work/nginx.conf" <<CONF
user root;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    location /dav/ {
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      client_body_buffer_size 128k;
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$relay_port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

small=$("$bin/cairn-bench" seed --url "http://127.0.0.1:$relay_port" --size 1024 --write-to "$work/www/small")
large=$("$bin/cairn-bench" seed --url "http://127.0.0.1:$relay_port" --size $((64 << 20)) --write-to "$work/www/large")

wrk_rate() { # url conns -> requests/s and MB/s
  local out
  out=$(wrk -t2 -c"$2" -d"${secs}s" "$1")
  local rps mbs
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  mbs=$(awk '/^Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
        if (u=="GB") n*=1024; else if (u=="KB") n/=1024; else if (u!="MB") n=v/1048576; printf "%.1f", n*1.048576}' <<<"$out")
  echo "$rps $mbs"
}
put_rate() { # target url size count conc -> requests/s and MB/s
  "$bin/cairn-bench" put --target "$1" --url "$2" --size "$3" --count "$4" --concurrency "$5" \
    --label "r$RANDOM" --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.1f" % (d["requests_per_sec"], d["mb_per_sec"]))'
}

row() { # label cairn nginx unit
  python3 - "$@" <<'PY'
import sys
label, a, b, unit = sys.argv[1:5]
a, b = float(a), float(b)
print(f"{label:<28} {a:>12.1f} {b:>12.1f} {unit:<6} {a / b if b else float('nan'):>6.2f}x")
PY
}

echo
echo "cairn $( "$bin/cairn-relay" --version | awk '{print $2}') vs $(nginx -v 2>&1 | sed 's/.*\///'), $(nproc) cores, ${secs}s wrk runs"
printf '%-28s %12s %12s %-6s %7s\n' "" "cairn" "nginx" "unit" "ratio"
read -r c_rps _ < <(wrk_rate "http://127.0.0.1:$relay_port/v1/blobs/$small" 64)
read -r n_rps _ < <(wrk_rate "http://127.0.0.1:$nginx_port/small" 64)
row "GET 1 KiB, 64 conns" "$c_rps" "$n_rps" "req/s"
read -r _ c_mbs < <(wrk_rate "http://127.0.0.1:$relay_port/v1/blobs/$large" 4)
read -r _ n_mbs < <(wrk_rate "http://127.0.0.1:$nginx_port/large" 4)
row "GET 64 MiB, 4 conns" "$c_mbs" "$n_mbs" "MB/s"
read -r c_rps _ < <(put_rate cairn "http://127.0.0.1:$relay_port" 1024 20000 64)
read -r n_rps _ < <(put_rate webdav "http://127.0.0.1:$nginx_port" 1024 20000 64)
row "PUT 1 KiB, 64 in flight" "$c_rps" "$n_rps" "req/s"
read -r _ c_mbs < <(put_rate cairn "http://127.0.0.1:$relay_port" $((64 << 20)) 16 2)
read -r _ n_mbs < <(put_rate webdav "http://127.0.0.1:$nginx_port" $((64 << 20)) 16 2)
row "PUT 64 MiB, 2 in flight" "$c_mbs" "$n_mbs" "MB/s"
echo "(cairn PUTs are durable: syncfs + index commit before 201; nginx WebDAV does not fsync)"
