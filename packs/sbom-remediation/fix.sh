#!/usr/bin/env bash
# Pretend to remediate one target.
set -euo pipefail
echo "remediated $1"
