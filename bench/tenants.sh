#!/usr/bin/env bash
# The cost of tenancy on the hot path: the demo's three patterns over the
# example's 1,000 copies, against a server without tenants (A) and one with
# a tenants file of 100 tenants, 201 keys (B), in the same run, by
# bench/ab.sh: the servers on a core of their own, measured in turns, and
# at the end the median of on / off (B / A) per pattern.
# Usage: [MME=path] bench/tenants.sh [DURATION] [ROUNDS]   (default 8s per measurement, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-8s}
rounds=${2:-2}
work=target/bench-tenants
# MME=path measures another build of the server (the client stays this one).
server_binary=${MME:-target/release/mme}
mkdir -p "$work"
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
B_ARGS="--tenants $work/tenants.toml" B_CLIENT_ARGS="--token $token" GUEST=linear-regression WORK="$work" \
  exec bash bench/ab.sh "$server_binary" "$server_binary" "even hot few-hot" "$rounds" "$duration"
