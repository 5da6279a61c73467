#!/usr/bin/env bash
# Writes the seeds that depend on the fixed fuzz key of src/lib.rs (Ed25519 from the seed
# 42, 42, …): a signature of stella_fuzz::MESSAGE for stella-approval, and allowed_signers
# files that list the key. Ed25519 signatures are deterministic, so ssh-keygen writes the
# signature the targets make. Needs python3 with `cryptography` (STELLA_PYTHON, as .ci/run
# sets up) and ssh-keygen. The other seeds are copies of repository files.
set -euo pipefail
cd "$(dirname "$0")"
python=${STELLA_PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" - "$work/key" <<'PY'
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization as s
key = Ed25519PrivateKey.from_private_bytes(bytes([42] * 32))
pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption())
open(sys.argv[1], "wb").write(pem)
PY
chmod 600 "$work/key"
key=$(ssh-keygen -y -f "$work/key")
printf 'apiVersion: stella/v1\nkind: Approval\n' > "$work/message"
ssh-keygen -q -Y sign -f "$work/key" -n stella-approval "$work/message"

mkdir -p seeds/sshsig seeds/allowed_signers
{ printf '\0'; cat "$work/message.sig"; } > seeds/sshsig/fixed-key-signature
{ printf '\1'; cat "$work/message"; } > seeds/sshsig/fixed-key-message
printf '\2\x30\x00A\x31\x00\n\xff\x00=' > seeds/sshsig/fixed-key-edits
printf 'alice namespaces="stella-approval,stella-evidence,git" %s fuzz@stella\n' "$key" \
  > seeds/allowed_signers/fixed-key
cat > seeds/allowed_signers/fixed-key-options <<EOT
# options, patterns and quoting
"alice smith",bob@example.com namespaces="stella-*,!git" $key
*@example.com,!mallory@example.com valid-after="20240101",valid-before="20261231235959Z" $key
alice cert-authority $key
al?ce namespaces="git",valid-after="202401011200" $key comment words
EOT
