#!/usr/bin/env bash
# A fleet on loopback: N replicas of `mme serve` over one model store, with a
# proxy in front that routes each model to one replica (consistent hashing on
# the model name, the configuration of deploy/nginx or deploy/haproxy).
#
#   deploy/local/cluster.sh N STORE [mme serve arguments...]
#
# STORE is a folder or an s3:// url; the arguments after it go to every
# replica (for S3: --s3-endpoint URL --s3-path-style, say). It prints
#
#   proxy http://127.0.0.1:PORT
#   replica I http://127.0.0.1:PORT pid PID      (one line per replica)
#   ready
#
# and runs until SIGTERM or SIGINT, which stop everything it started.
#
# Environment: MME (the binary; target/release/mme by default), PROXY (nginx,
# the default, or haproxy), PROXY_PORT (a free port by default), CLUSTER_DIR
# (where logs and configurations go; a new temporary folder by default),
# MME_DRAIN_DELAY (1s by default: how long a stopped replica stays up, not
# ready, before its listener closes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ $# -lt 2 ]] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N STORE [mme serve arguments...]" >&2
    exit 2
fi
count=$1
store=$2
shift 2
mme="${MME:-$root/target/release/mme}"
proxy="${PROXY:-nginx}"
dir="${CLUSTER_DIR:-$(mktemp -d -t mme-cluster.XXXXXX)}"
export MME_DRAIN_DELAY="${MME_DRAIN_DELAY:-1s}"
# Absolute: nginx reads paths relative to its prefix.
dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
[[ -x $mme ]] || { echo "no mme binary at $mme: cargo build --release, or set MME" >&2; exit 1; }
case $proxy in
    nginx | haproxy) command -v "$proxy" >/dev/null || { echo "$proxy is not installed" >&2; exit 1; } ;;
    *) echo "PROXY must be nginx or haproxy, not $proxy" >&2; exit 2 ;;
esac

pids=()
proxy_pid=
stop() {
    trap - TERM INT EXIT
    # The proxy first, so nothing new reaches a replica that is stopping.
    [[ -n $proxy_pid ]] && kill -TERM "$proxy_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Each replica drains, then finishes what is in flight; past 30 s it is killed.
    local waited=0
    while ((waited < 300)); do
        local alive=0
        for pid in "${pids[@]}" $proxy_pid; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "${pids[@]}" $proxy_pid; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT
trap stop EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The replicas, each on a port of its own choosing, read from its log.
ports=()
for ((i = 1; i <= count; i++)); do
    log="$dir/replica-$i.log"
    "$mme" serve --model-store "$store" --bind 127.0.0.1:0 --grpc-bind off \
        --cache-dir "$dir/replica-$i" "$@" >"$log" 2>&1 &
    pids+=($!)
done
for ((i = 1; i <= count; i++)); do
    log="$dir/replica-$i.log"
    port=
    for _ in $(seq 300); do
        port=$(grep -o 'serving address=127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [[ -n $port ]] && break
        kill -0 "${pids[i - 1]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "replica $i did not start; its log, $log:" >&2
        tail -20 "$log" >&2
        exit 1
    fi
    ports+=("$port")
done

# The proxy, with the replicas and the port written into its configuration.
proxy_port="${PROXY_PORT:-$(free_port)}"
servers=
for ((i = 1; i <= count; i++)); do
    if [[ $proxy == nginx ]]; then
        servers+="    server 127.0.0.1:${ports[i - 1]} max_fails=1 fail_timeout=5s;"$'\n'
    else
        servers+="    server r$i 127.0.0.1:${ports[i - 1]} check"$'\n'
    fi
done
if [[ $proxy == nginx ]]; then
    listen="    listen 127.0.0.1:$proxy_port;"
    template="$root/deploy/nginx/mme.conf"
else
    listen="    bind 127.0.0.1:$proxy_port"
    template="$root/deploy/haproxy/haproxy.cfg"
fi
render() {
    SERVERS="$servers" LISTEN="$listen" awk '
        /# BEGIN replicas/ { print; printf "%s", ENVIRON["SERVERS"]; skip = 1; next }
        /# END replicas/ { skip = 0 }
        /# BEGIN listen/ { print; print ENVIRON["LISTEN"]; skip = 1; next }
        /# END listen/ { skip = 0 }
        !skip' "$template"
}
if [[ $proxy == nginx ]]; then
    mkdir -p "$dir/nginx/temp"
    # Workers started by root run as nobody, and write request bodies here.
    chmod 0777 "$dir/nginx/temp"
    render >"$dir/nginx/mme.conf"
    cat >"$dir/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/temp/body;
    proxy_temp_path $dir/nginx/temp/proxy;
    fastcgi_temp_path $dir/nginx/temp/fastcgi;
    uwsgi_temp_path $dir/nginx/temp/uwsgi;
    scgi_temp_path $dir/nginx/temp/scgi;
    include $dir/nginx/mme.conf;
}
CONF
    nginx -e "$dir/nginx/error.log" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" &
    proxy_pid=$!
else
    render >"$dir/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    proxy_pid=$!
fi
for _ in $(seq 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $proxy_port), 0.2)" 2>/dev/null; then
        break
    fi
    kill -0 "$proxy_pid" 2>/dev/null || { echo "$proxy did not start; see $dir" >&2; exit 1; }
    sleep 0.1
done

echo "proxy http://127.0.0.1:$proxy_port"
for ((i = 1; i <= count; i++)); do
    echo "replica $i http://127.0.0.1:${ports[i - 1]} pid ${pids[i - 1]}"
done
echo ready
# Until told to stop; a replica that dies meanwhile does not end the fleet.
while true; do
    sleep 1 &
    wait $! || true
done
