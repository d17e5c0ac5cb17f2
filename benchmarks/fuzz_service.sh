#!/usr/bin/env bash
# Fuzz the scoring service from its own OpenAPI document with schemathesis (loopback only, bounded).
#   benchmarks/fuzz_service.sh RUN [MAX_EXAMPLES]
# Starts `metricad serve RUN` on a free local port, runs `st run` with every check schemathesis has but one
# (the one that matters here: not_a_server_error, i.e. no 5xx), then stops the server. Exit status: schemathesis's.
# Left out: positive_data_acceptance. OpenAPI's `format: binary` cannot say "a decodable image", so schema-valid
# random bytes get a 400 "not an image" by design.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$1"; EXAMPLES="${2:-200}"
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)  # the fuzzer writes too (thresholds, corrections): it gets a copy of the run
cp -r "$RUN" "$WORK/run"
.venv/bin/metricad serve "$WORK/run" --port "$PORT" --device cpu 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.3
done
.venv/bin/st run "http://127.0.0.1:$PORT/openapi.json" --checks all --exclude-checks positive_data_acceptance --max-examples "$EXAMPLES" \
    --request-timeout 30 --continue-on-failure --phases examples,coverage,fuzzing,stateful
