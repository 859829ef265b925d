"""A recording relay for OTLP/HTTP: listens where the hops send, passes each
export request on to the collector unchanged (body, content type and
encoding), answers what the collector answered, and keeps a copy.

The tail-sampling check needs every span the hops sent, including those of
the traces the collector drops; this is how it gets them without changing the
hops or the collector's settings (only the collector's port moves).
"""

import gzip
import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import Failure

# Headers of an export request that the collector reads.
PASSED_ON = ("Content-Type", "Content-Encoding")


def free_port(host: str) -> int:
    """A port nothing listens on at the moment, on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class OtlpRelay:
    def __init__(self, listen: tuple[str, int], target: str) -> None:
        self.target = target.rstrip("/")
        self.recorded: list[bytes] = []  # request bodies, decompressed, in arrival order
        self.failures: list[str] = []  # what went wrong passing a request on
        self.lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {h: self.headers[h] for h in PASSED_ON if self.headers.get(h)}
                status, answer, answer_type = relay.pass_on(self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Type", answer_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer(listen, Handler)
        except OSError as error:
            raise Failure(f"the OTLP relay cannot listen on {listen[0]}:{listen[1]}: {error}") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def pass_on(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        request = urllib.request.Request(self.target + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                status, reply, reply_type = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            status, reply, reply_type = error.code, error.read(), error.headers.get("Content-Type", "")
        except (urllib.error.URLError, OSError) as error:
            with self.lock:
                self.failures.append(f"{path}: {error}")
            return 503, b"", "text/plain"
        if path == "/v1/traces" and 200 <= status < 300:
            plain = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            with self.lock:
                self.recorded.append(plain)
        elif status >= 300:
            with self.lock:
                self.failures.append(f"{path}: the collector answered {status}")
        return status, reply, reply_type or "application/x-protobuf"

    def requests(self) -> list[bytes]:
        with self.lock:
            return list(self.recorded)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
