"""A webhook receiver for the notification tests: listens on 127.0.0.1:PORT, checks every
POST with the `standardwebhooks` package (the Standard Webhooks reference verifier) and the
signing key SECRET, appends one JSON line per delivery to LOG (webhook-id, whether the
signature verified, the path, the content type, the body, the arrival time) and answers STATUS (default 204).

    python webhook_receiver.py PORT SECRET LOG [STATUS [tls]]

With `tls` it serves HTTPS with a self-signed certificate for 127.0.0.1 made at start (with
the `cryptography` package), written to LOG.cert.pem for the client to trust.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

PORT, SECRET, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
STATUS = int(sys.argv[4]) if len(sys.argv) > 4 else 204
HOOK = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        at = time.time()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            HOOK.verify(body, headers)
            verified = True
        except Exception as e:  # the verifier's refusal, whatever its class
            verified = str(e) or type(e).__name__
        line = {
            "id": headers.get("webhook-id"),
            "verified": verified,
            "path": self.path,
            "contentType": headers.get("content-type"),
            "body": body.decode("utf-8", "replace"),
            "at": at,
        }
        with open(LOG, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(STATUS)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def self_signed(cert_path, key_path):
    import datetime, ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stella test receiver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


server = HTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5 and sys.argv[5] == "tls":
    import ssl
    self_signed(LOG + ".cert.pem", LOG + ".key.pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(LOG + ".cert.pem", LOG + ".key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
