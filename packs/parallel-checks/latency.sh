#!/usr/bin/env bash
# Measure a pretend p99 latency and report it as an output.
set -euo pipefail
threshold="$1"
p99=120
echo "p99=${p99}ms (threshold ${threshold}ms)"
echo "p99=${p99}" >> "$STELLA_OUTPUT"
