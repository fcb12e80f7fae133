#!/usr/bin/env bash
# Benchmark of `pfsync mcp` through a real MCP client (the official Python SDK): read-tool latency (p50/p99 of
# check_balance and payout_status) and money-tool throughput (request_payout under `execute`: each call appends
# its row and runs the exactly-once engine for it), over stdio and streamable HTTP, against `pfsync sandbox`.
#
#   scripts/mcp-bench.sh [PFSYNC_BINARY] [READS] [PAYOUTS]
#
# Needs the MCP SDK: python3 -m venv ~/.cache/pfsync-mcp-venv && ~/.cache/pfsync-mcp-venv/bin/pip install mcp
# (or PFSYNC_MCP_PYTHON). The figures in README.md were taken with the release binary (cargo build --release);
# say which build you use.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$here/target/debug/pfsync}"
reads="${2:-200}"
payouts="${3:-50}"
py="${PFSYNC_MCP_PYTHON:-${HOME:-/root}/.cache/pfsync-mcp-venv/bin/python}"
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
export PURPLEFLEA_API_KEY=pf_test_sandbox

"$bin" sandbox --port 0 --agents 1000 >"$work/sandbox.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q "ready at" "$work/sandbox.out" 2>/dev/null && break; sleep 0.1; done
api="$(grep -o 'http://[^ ]*' "$work/sandbox.out" | head -1)"
cat >"$work/pfsync.toml" <<TOML
[mcp.policy]
request_payout = "execute"
TOML
common=(--config "$work/pfsync.toml" --warehouse "$work/wh" --api-url "$api" --faucet-url "$api" -q)
"$bin" "${common[@]}" sync >/dev/null

script() { # $1 = request id prefix
  cat <<JSON
[{"call": "check_balance", "arguments": {"agent_id": "agent-000001"}, "repeat": $reads},
 {"call": "request_payout", "arguments": {"request_id": "$1-{i}", "agent_id": "agent-000002", "amount_usd": 0.01, "reason": "bench"}, "repeat": $payouts},
 {"call": "payout_status", "arguments": {"request_id": "$1-0"}, "repeat": $reads}]
JSON
}
report() { # $1 = transport, stdin = client output
  "$py" -c '
import json, sys
transport = sys.argv[1]
for line in sys.stdin:
    o = json.loads(line)
    if "seconds" not in o:
        continue
    s = sorted(o["seconds"])
    n = len(s)
    p = lambda q: s[min(n - 1, int(q * n))] * 1000
    errors = " (ERRORS)" if o["isError"] else ""
    call = o["call"]
    if o["call"] == "request_payout":
        print(f"{transport:6} {call:15} {n} calls in {sum(s):.2f} s: {n / sum(s):.1f} payouts/s, p50 {p(0.5):.0f} ms{errors}")
    else:
        print(f"{transport:6} {call:15} {n} calls: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms{errors}")
' "$1"
}

script stdio >"$work/stdio.json"
"$py" "$here/tests/it/mcp_client.py" stdio "$work/stdio.json" "$bin" "${common[@]}" mcp --client bench-stdio \
  2>/dev/null | report stdio

export PFSYNC_MCP_TOKEN="$("$py" -c "import secrets; print(secrets.token_hex(32))")"
"$bin" "${common[@]}" mcp --client bench-http --listen 127.0.0.1:0 >"$work/mcp.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q "ready at" "$work/mcp.out" 2>/dev/null && break; sleep 0.1; done
url="$(grep -o 'http://[^ ]*/mcp' "$work/mcp.out")"
script http >"$work/http.json"
"$py" "$here/tests/it/mcp_client.py" http "$work/http.json" "$url" 2>/dev/null | report http
