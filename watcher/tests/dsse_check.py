"""Verifies a Stella attestation with an independent DSSE implementation (securesystemslib).

usage: dsse_check.py ENVELOPE.json PUBLIC_KEY_HEX KEYID
"""
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

envelope = Envelope.from_dict(json.load(open(sys.argv[1])))
public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sys.argv[2]))
key = SSlibKey.from_crypto(public, keyid=sys.argv[3])
envelope.verify([key], 1)
statement = json.loads(envelope.pae().split(b" ", 4)[4]) if False else json.loads(envelope.payload)
assert statement["_type"] == "https://in-toto.io/Statement/v1", statement["_type"]
print("verified", statement["predicate"]["runId"])
