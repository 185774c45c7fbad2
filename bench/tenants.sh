#!/usr/bin/env bash
# The cost of tenancy on the hot path: the demo's three patterns over the
# example's 1,000 copies, against a server without tenants and one with a
# tenants file of 100 tenants (201 keys), in the same run. Each round
# measures the two servers one after the other, in turns of which goes
# first. Each measurement also gives the server's CPU time per request
# (from /proc, over the whole call). At the end, the median of on / off
# over the rounds, per pattern.
#
# On a machine of two or more cores each server runs on the last core and
# the load generator on the others (taskset), so that the client's work
# does not move the server's figures; PIN=0 turns that off.
# Usage: [MME=path] bench/tenants.sh [DURATION] [ROUNDS]   (default 8s per measurement, 2 rounds)
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
duration=${1:-8s}
rounds=${2:-2}
cores=$(nproc)
if [ "${PIN:-1}" = 1 ] && [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpus=(taskset -c $((cores - 1)))
  client_cpus=(taskset -c 0-$((cores - 2)))
  echo "servers on core $((cores - 1)), the load generator on cores 0-$((cores - 2))"
else
  server_cpus=()
  client_cpus=()
fi
models=1000
work=target/bench-tenants
# MME=path measures another build of the server (the client stays this one).
if [ -z "${MME:-}" ]; then cargo build --release -p mme-host >/dev/null; fi
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
server_binary=${MME:-$mme}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/linear-regression.tar.gz" "$work/store/m$i.tar.gz"; done
token=bench-token-0
{
  echo '[admin]'
  echo "keys = [\"sha256:$(printf %s admin-token | sha256sum | cut -d' ' -f1)\"]"
  for t in $(seq 0 99); do
    echo "[tenants.t$t]"
    if [ "$t" = 0 ]; then echo 'models = ["m*"]'; else echo "models = [\"t$t-*\"]"; fi
    echo "inference_keys = [\"sha256:$(printf %s "bench-token-$t" | sha256sum | cut -d' ' -f1)\"]"
    echo "management_keys = [\"sha256:$(printf %s "bench-manage-$t" | sha256sum | cut -d' ' -f1)\"]"
  done
} >"$work/tenants.toml"
off=$(free_port)
on=$(free_port)
"${server_cpus[@]}" "$server_binary" serve --model-store "$work/store" --bind "127.0.0.1:$off" --grpc-bind off \
  --cache-dir "$work/cache" 2>"$work/off.log" &
off_pid=$!
"${server_cpus[@]}" "$server_binary" serve --model-store "$work/store" --bind "127.0.0.1:$on" --grpc-bind off \
  --cache-dir "$work/cache" --tenants "$work/tenants.toml" 2>"$work/on.log" &
on_pid=$!
pids="$off_pid $on_pid"
# User and system CPU time of process $1 so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for port in $off $on; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
done
# Every model loaded first: this measures serving, not loading.
"$mme" bench cold --url "http://127.0.0.1:$off" --models "$models" --prefix m >/dev/null
"$mme" bench cold --url "http://127.0.0.1:$on" --models "$models" --prefix m --token "$token" >/dev/null
results="$work/results.txt"
: >"$results"
for round in $(seq "$rounds"); do
  for pattern in even hot few-hot; do
    # The order alternates, so that going first or second favours neither.
    order=(off on)
    [ $((round % 2)) = 0 ] && order=(on off)
    for server in "${order[@]}"; do
      if [ "$server" = off ]; then port=$off; pid=$off_pid; auth=(); else port=$on; pid=$on_pid; auth=(--token "$token"); fi
      echo "round $round, $pattern, tenants $server:"
      before=$(cpu_ticks "$pid")
      report=$("${client_cpus[@]}" "$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix m "${auth[@]}" \
        --duration "$duration" --warmup 0s --pattern "$pattern")
      after=$(cpu_ticks "$pid")
      echo "$report"
      requests=$(awk -v p="$pattern" '$1 == p { print $2 }' <<<"$report")
      rate=$(awk -v p="$pattern" '$1 == p { print $3 }' <<<"$report")
      cpu=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" \
        'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      echo "server CPU per request: $cpu us"
      echo "$round $pattern $server $rate $cpu" >>"$results"
    done
  done
done
echo
echo "on / off, median over $rounds rounds (each round's on against its off, measured one after the other):"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
table = {(r, p, s): (float(rate), float(cpu)) for r, p, s, rate, cpu in rows}
print(f"{'pattern':<8} {'req/s on/off':>13} {'range':>12} {'CPU/req on/off':>15} {'range':>12}")
for pattern in ["even", "hot", "few-hot"]:
    pairs = [(table[(r, pattern, "on")], table[(r, pattern, "off")])
             for r, p, s in table if p == pattern and s == "off" and (r, p, "on") in table]
    rate = [on[0] / off[0] for on, off in pairs]
    cpu = [on[1] / off[1] for on, off in pairs]
    print(f"{pattern:<8} {statistics.median(rate):>13.3f} {min(rate):>5.2f}-{max(rate):<6.2f}"
          f" {statistics.median(cpu):>15.3f} {min(cpu):>5.2f}-{max(cpu):<6.2f}")
PY
