#!/usr/bin/env bash
# Prints what the run did; IMAGE and CRITICAL come from the step's env.
set -euo pipefail
echo "image ${IMAGE}: ${CRITICAL} critical findings after remediation"
