#!/usr/bin/env bash
# Two servers against each other over 1,000 copies of one guest: two builds,
# or one build started two ways (B_ARGS). Both run at once, every model
# loaded first; each round measures them one after the other, in turns of
# which goes first, on each pattern. Each measurement gives req/s, p99 and
# the server's CPU time per request (from /proc, over the whole call),
# and the end prints, per pattern, the median of B / A over the rounds.
#
# On a machine of two or more cores the servers run on the last core and
# the load generator on the others (taskset), so that the client's work
# does not move the server's figures; PIN=0 turns that off.
#
# Usage: bench/ab.sh BINARY_A BINARY_B [PATTERNS] [ROUNDS] [DURATION]
#   such as: bench/ab.sh /path/to/before/mme target/release/mme "even hot" 10 6s
# Settings by environment:
#   GUEST=echo            the example to serve (echo: the host's own cost)
#   B_ARGS="..."          more arguments for server B's `mme serve`
#   B_CLIENT_ARGS="..."   more arguments for the load generator against B
#   CLIENT_ARGS="..."     more arguments for the load generator against both
#                         (such as "--route v2-binary" or "--route grpc": each
#                         server serves gRPC too, and its load generator is
#                         given its address)
#   WORK=target/bench-ab  where the store, logs and results go
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
a=${1:?BINARY_A}
b=${2:?BINARY_B}
patterns=${3:-even}
rounds=${4:-3}
duration=${5:-6s}
guest=${GUEST:-echo}
read -r -a b_args <<<"${B_ARGS:-}"
read -r -a b_client_args <<<"${B_CLIENT_ARGS:-}"
read -r -a client_args <<<"${CLIENT_ARGS:-}"
# The models are loaded with B's own arguments (a key), the route's aside.
b_cold_args=("${b_client_args[@]}")
work=${WORK:-target/bench-ab}
models=1000
cores=$(nproc)
if [ "${PIN:-1}" = 1 ] && [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpus=(taskset -c $((cores - 1)))
  client_cpus=(taskset -c 0-$((cores - 2)))
  echo "servers on core $((cores - 1)), the load generator on cores 0-$((cores - 2))"
else
  server_cpus=()
  client_cpus=()
fi
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/$guest.tar.gz" "$work/store/m$i.tar.gz"; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
a_port=$(free_port)
b_port=$(free_port)
a_grpc=127.0.0.1:$(free_port)
b_grpc=127.0.0.1:$(free_port)
a_client_args=("${client_args[@]}" --grpc "$a_grpc")
b_client_args=("${client_args[@]}" --grpc "$b_grpc" "${b_client_args[@]}")
"${server_cpus[@]}" "$a" serve --model-store "$work/store" --bind "127.0.0.1:$a_port" --grpc-bind "$a_grpc" \
  --cache-dir "$work/cache" 2>"$work/a.log" &
a_pid=$!
"${server_cpus[@]}" "$b" serve --model-store "$work/store" --bind "127.0.0.1:$b_port" --grpc-bind "$b_grpc" \
  --cache-dir "$work/cache" "${b_args[@]}" 2>"$work/b.log" &
b_pid=$!
trap 'kill $a_pid $b_pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# User and system CPU time of process $1 so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
for port in $a_port $b_port; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
done
# Every model loaded first: this measures serving, not loading.
"$mme" bench cold --url "http://127.0.0.1:$a_port" --models "$models" --prefix m >/dev/null
"$mme" bench cold --url "http://127.0.0.1:$b_port" --models "$models" --prefix m "${b_cold_args[@]}" >/dev/null
results="$work/results.txt"
: >"$results"
for round in $(seq "$rounds"); do
  for pattern in $patterns; do
    # The order alternates, so that going first or second favours neither.
    order=(a b)
    [ $((round % 2)) = 0 ] && order=(b a)
    for server in "${order[@]}"; do
      if [ "$server" = a ]; then port=$a_port; pid=$a_pid; client=("${a_client_args[@]}"); else port=$b_port; pid=$b_pid; client=("${b_client_args[@]}"); fi
      before=$(cpu_ticks "$pid")
      report=$("${client_cpus[@]}" "$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix m "${client[@]}" \
        --duration "$duration" --warmup 0s --pattern "$pattern")
      after=$(cpu_ticks "$pid")
      line=$(awk -v p="$pattern" '$1 == p' <<<"$report")
      read -r _ requests rate _ _ p99 _ <<<"$line"
      cpu=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" \
        'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      echo "round $round, $pattern, $server: $rate req/s, p99 $p99 ms, $cpu µs of server CPU per request"
      echo "$round $pattern $server $rate $cpu" >>"$results"
    done
  done
done
echo
echo "B / A, median over $rounds rounds (each round's B against its A, measured one after the other):"
python3 - "$results" "$patterns" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
table = {(r, p, s): (float(rate), float(cpu)) for r, p, s, rate, cpu in rows}
print(f"{'pattern':<8} {'req/s B/A':>10} {'range':>12} {'CPU/req B/A':>12} {'range':>12} {'CPU/req A, B µs':>16}")
for pattern in sys.argv[2].split():
    pairs = [(table[(r, pattern, "b")], table[(r, pattern, "a")])
             for r, p, s in table if p == pattern and s == "a" and (r, p, "b") in table]
    rate = [b[0] / a[0] for b, a in pairs]
    cpu = [b[1] / a[1] for b, a in pairs]
    a_cpu = statistics.median(a[1] for _, a in pairs)
    b_cpu = statistics.median(b[1] for b, _ in pairs)
    print(f"{pattern:<8} {statistics.median(rate):>10.3f} {min(rate):>5.2f}-{max(rate):<6.2f}"
          f" {statistics.median(cpu):>12.3f} {min(cpu):>5.2f}-{max(cpu):<6.2f} {a_cpu:>7.2f} {b_cpu:>7.2f}")
PY
