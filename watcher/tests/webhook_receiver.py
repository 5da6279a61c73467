"""A webhook receiver for the notification tests: listens on 127.0.0.1:PORT, checks every
POST with the `standardwebhooks` package (the Standard Webhooks reference verifier) and the
signing key SECRET, appends one JSON line per delivery to LOG (webhook-id, whether the
signature verified, the path, the content type, the body, the arrival time) and answers STATUS (default 204).

    python webhook_receiver.py PORT SECRET LOG [STATUS]
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


server = HTTPServer(("127.0.0.1", PORT), Handler)
print("listening", flush=True)
server.serve_forever()
