#!/usr/bin/env bash
# A fleet on loopback (deploy/local/cluster.sh), three figures:
#  1. the proxy's cost: the three traffic patterns through nginx in front of
#     one replica, against that replica directly, alternating, same run;
#  2. N models over three replicas behind nginx against one replica holding
#     them all: models loaded and RSS per replica after a first request to
#     each model;
#  3. failover: SIGKILL one of the three replicas, then the time until every
#     one of its models has answered through the proxy.
# Usage: bench/fleet.sh [DURATION] [MODELS]   (default 8s per measurement, 10000 models)
# PARTS="1 3" runs only those parts (part 3 runs after part 2 on its fleet).
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
duration=${1:-8s}
models=${2:-10000}
work=target/bench-fleet
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
rm -rf "$work/store" "$work/cluster-"* && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/linear-regression.tar.gz" "$work/store/m$i.tar.gz"; done

fleet_pid=
start_fleet() { # N NAME: starts N replicas, sets $proxy and ${replicas[@]} ${pids[@]}
    local out="$work/cluster-$2.out"
    CLUSTER_DIR="$work/cluster-$2" deploy/local/cluster.sh "$1" "$work/store" >"$out" 2>"$work/cluster-$2.err" &
    fleet_pid=$!
    for _ in $(seq 600); do grep -qx ready "$out" 2>/dev/null && break; sleep 0.1; done
    grep -qx ready "$out" || { cat "$work/cluster-$2.err" >&2; exit 1; }
    proxy=$(awk '$1 == "proxy" { print $2 }' "$out")
    mapfile -t replicas < <(awk '$1 == "replica" { print $3 }' "$out")
    mapfile -t pids < <(awk '$1 == "replica" { print $5 }' "$out")
}
stop_fleet() {
    kill -TERM "$fleet_pid" 2>/dev/null || true
    wait "$fleet_pid" 2>/dev/null || true
}
trap stop_fleet EXIT
want() { [[ " ${PARTS:-1 2 3} " == *" $1 "* ]]; }
rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
loaded() { curl -s "$1/metrics" | awk '$1 == "mme_models_loaded" { print $2 }'; }

if want 1; then
echo "== 1. the proxy's cost: one replica, directly and through nginx, 1,000 models"
start_fleet 1 one
"$mme" bench cold --url "${replicas[0]}" --models 1000 --prefix m >/dev/null
for round in 1 2; do
    for pattern in even hot few-hot; do
        for target in direct proxy; do
            if [ "$target" = direct ]; then url=${replicas[0]}; else url=$proxy; fi
            echo "round $round, $pattern, $target:"
            "$mme" bench --url "$url" --models 1000 --prefix m --duration "$duration" --warmup 2s \
                --pattern "$pattern" | tail -n 1
        done
    done
done
stop_fleet
fi

if want 2 || want 3; then
echo "== 2. $models models: three replicas behind nginx against one replica"
start_fleet 3 three
start=$SECONDS
"$mme" bench cold --url "$proxy" --models "$models" --prefix m | tail -3
echo "three replicas: first request to each model through the proxy in $((SECONDS - start)) s"
for i in 0 1 2; do
    echo "replica $((i + 1)): $(loaded "${replicas[i]}") models loaded, RSS $(rss_mib "${pids[i]}") MiB"
done

fi
if want 3; then
echo "== 3. failover: SIGKILL replica 1, then every one of its models through the proxy"
mapfile -t own < <(curl -s "${replicas[0]}/metrics" |
    awk -F'"' '/^mme_requests_total\{model="m[0-9]+",version="1",status="200"\}/ { print $2 }' | sort -u)
echo "replica 1 served ${#own[@]} models"
answer() { # MODEL: retries until the proxy answers 200 for it
    until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$proxy/predictions/$1" \
        -H 'content-type: application/json' -d '[[0.5]]')" = 200 ]; do sleep 0.01; done
}
export -f answer
export proxy
kill -KILL "${pids[0]}"
killed=$(date +%s%N)
answer "${own[0]}"
echo "the first of its models answered elsewhere $((($(date +%s%N) - killed) / 1000000)) ms after the kill"
printf '%s\n' "${own[@]}" | xargs -P 16 -I{} bash -c 'answer {}'
echo "all ${#own[@]} answered elsewhere $((($(date +%s%N) - killed) / 1000000)) ms after the kill (16 clients)"
fi
stop_fleet

if want 2; then
start_fleet 1 alone
start=$SECONDS
"$mme" bench cold --url "${replicas[0]}" --models "$models" --prefix m | tail -3
echo "one replica: first request to each model in $((SECONDS - start)) s"
echo "one replica: $(loaded "${replicas[0]}") models loaded, RSS $(rss_mib "${pids[0]}") MiB"
fi
