"""An OTLP/HTTP trace collector for wsgate's tests: each `POST /v1/traces` body is decoded
with the reference protobuf classes of the `opentelemetry-proto` package (independent of
wsgate's hand-written encoder) and printed as one JSON line per span.

    python3 collector.py

Prints `port N` once listening, then for each span:
{"name", "kind", "trace_id", "span_id", "parent_span_id" (hex, "" for none), "start", "end"
(unix ns), "attributes": {key: value}, "status": {"code", "message"}, "resource":
{key: value}, "scope": name, "content_type"}. A body that does not decode is answered 400
and printed as {"error": ...}.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # the test fails on this line
            print(json.dumps({"error": str(e), "path": self.path}), flush=True)
            self.send_response(400)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    print(json.dumps({
                        "path": self.path,
                        "content_type": self.headers.get("content-type"),
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": attributes(span.attributes),
                        "status": {"code": span.status.code, "message": span.status.message},
                        "resource": resource,
                        "scope": ss.scope.name,
                    }), flush=True)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
sys.stdout.flush()
server.serve_forever()
