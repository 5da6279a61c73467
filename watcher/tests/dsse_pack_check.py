"""Verifies a Stella pack bundle's envelope with an independent DSSE implementation
(securesystemslib), and prints the pack it names.

usage: dsse_pack_check.py ENVELOPE.json PUBLIC_KEY_HEX KEYID
"""
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

envelope = Envelope.from_dict(json.load(open(sys.argv[1])))
assert envelope.payload_type == "application/vnd.stella.pack+json", envelope.payload_type
public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sys.argv[2]))
key = SSlibKey.from_crypto(public, keyid=sys.argv[3])
envelope.verify([key], 1)
payload = json.loads(envelope.payload)
print("verified", payload["name"], payload["version"], len(payload["files"]), "files")
