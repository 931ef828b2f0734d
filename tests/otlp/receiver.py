#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for the audit export's end-to-end tests (tests/tests/otlp.rs).

It decodes each POST body with the official OpenTelemetry protobuf definitions (the PyPI package
`opentelemetry-proto`, pinned in requirements.txt), not with the code under test, and writes every
log record it accepted as one JSON line to --out, for the Rust test to read:

    {"request": 3, "time_unix_nano": ..., "observed_time_unix_nano": ..., "severity_number": 9,
     "severity_text": "INFO", "event_name": "infra.audit.request", "body": "{...}",
     "attributes": {"user.name": "...", "http.response.status_code": 403, ...},
     "resource": {"service.name": "infra", ...}, "scope": {"name": "infra.audit", "version": "1"},
     "headers": {"x-api-key": "..."}}

It answers as the OTLP/HTTP specification says a receiver does: 200 with an (empty)
`ExportLogsServiceResponse` in protobuf; 404 for another path; 415 for another content type;
400 with a `google.rpc.Status` for a body that does not decode. While the file --fail-while
names exists, or for the first --fail-first requests, it answers --fail-status (503) with
`Retry-After: 1` and records nothing (a receiver that is down). The next --refuse-first requests
are refused for good (400, with a `google.rpc.Status`), and the next --partial-first are taken
with a `partial_success` that rejects one record. Every request, accepted or not,
is counted in --out's sibling `<out>.requests` (one line each: the status answered).

The first line on stdout is `listening <port>`; it serves HTTPS with --cert and --key until
killed.
"""

import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

LOCK = threading.Lock()
STATE = {"requests": 0}


def any_value(value):
    """An AnyValue as plain JSON."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def rpc_status(code, message):
    """A `google.rpc.Status` (code = 1, message = 2), the body of an OTLP/HTTP error."""
    text = message.encode()
    return bytes([0x08, code, 0x12, len(text)]) + text


def attributes(key_values):
    return {kv.key: any_value(kv.value) for kv in key_values}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status, body=b"", content_type="application/x-protobuf", extra=()):
        with open(self.server.args.out + ".requests", "a", encoding="utf-8") as log:
            log.write(f"{status}\n")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (the http.server name)
        args = self.server.args
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with LOCK:
            STATE["requests"] += 1
            number = STATE["requests"]
        if self.path != "/v1/logs":
            self.answer(404, b"not found", "text/plain")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.answer(415, b"want application/x-protobuf", "text/plain")
            return
        failing = number <= args.fail_first or (
            args.fail_while and os.path.exists(args.fail_while)
        )
        if failing:
            self.answer(args.fail_status, b"", "text/plain", [("Retry-After", "1")])
            return
        if number <= args.fail_first + args.refuse_first:
            self.answer(400, rpc_status(3, "refused by the test receiver"))
            return
        partial = number <= args.fail_first + args.refuse_first + args.partial_first
        request = logs_service_pb2.ExportLogsServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            self.answer(400, str(error).encode(), "text/plain")
            return
        headers = {
            name.lower(): value
            for name, value in self.headers.items()
            if name.lower() in args.keep_header
        }
        lines = []
        for resource_logs in request.resource_logs:
            resource = attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                scope = {"name": scope_logs.scope.name, "version": scope_logs.scope.version}
                for record in scope_logs.log_records:
                    lines.append(
                        json.dumps(
                            {
                                "request": number,
                                "time_unix_nano": record.time_unix_nano,
                                "observed_time_unix_nano": record.observed_time_unix_nano,
                                "severity_number": record.severity_number,
                                "severity_text": record.severity_text,
                                "event_name": record.event_name,
                                "body": any_value(record.body),
                                "attributes": attributes(record.attributes),
                                "resource": resource,
                                "scope": scope,
                                "headers": headers,
                            }
                        )
                    )
        with LOCK, open(args.out, "a", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
        response = logs_service_pb2.ExportLogsServiceResponse()
        if partial:
            response.partial_success.rejected_log_records = 1
            response.partial_success.error_message = "one record refused by the test receiver"
        self.answer(200, response.SerializeToString())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-while", default="")
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--refuse-first", type=int, default=0)
    parser.add_argument("--partial-first", type=int, default=0)
    parser.add_argument("--keep-header", action="append", default=[])
    args = parser.parse_args()
    args.keep_header = [h.lower() for h in args.keep_header]
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.args = args
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
