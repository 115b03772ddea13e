"""A webhook receiver for wsgate's connection events, verifying every delivery with the
`standardwebhooks` package (an implementation independent of wsgate's).

    python3 receiver.py SECRET FAIL_FIRST

Prints `port N` once listening, then one JSON line per request:
{"id", "ok", "status", "events"} — the first FAIL_FIRST requests are answered 503 (after
verifying them), the rest 204; a signature that does not verify is answered 400 with
"ok": false.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

secret, fail_first = sys.argv[1], int(sys.argv[2])
hook = Webhook(secret)
seen = {"requests": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = hook.verify(body, headers)
            ok = True
        except Exception as e:  # any failure to verify is the test's failure
            payload, ok = {"error": str(e)}, False
        seen["requests"] += 1
        status = 400 if not ok else (503 if seen["requests"] <= fail_first else 204)
        print(json.dumps({"id": headers.get("webhook-id"), "ok": ok, "status": status,
                          "events": payload.get("events") if ok else None}), flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
