"""A local webhook receiver for tests and the bench: records each POST, answers from a script."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Answers ``script`` status codes in turn, then ``default``; deduplicates on webhook-id."""

    def __init__(self, *, script=None, default=200, delay=0.0, redirect_to=None, trickle=0.0, delay_for=None):
        self.script = list(script or [])
        self.trickle = trickle  # seconds between the body's bytes: a receiver slower than any timeout
        self.default = default
        self.delay = delay
        self.delay_for = delay_for  # body (dict) -> seconds: a receiver slower on some events than others
        self.redirect_to = redirect_to
        self.requests: list[dict] = []
        self.seen_ids: list[str] = []  # first sighting of each webhook-id, in order
        self.duplicates = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per keep-alive request

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.delay_for:
                    time.sleep(receiver.delay_for(json.loads(body)))
                with receiver.lock:
                    receiver.requests.append({"headers": dict(self.headers.items()), "body": body, "path": self.path})
                    code = receiver.script.pop(0) if receiver.script else receiver.default
                    msg_id = self.headers.get("webhook-id", "")
                    if 200 <= code < 300:
                        if msg_id in receiver._seen:
                            receiver.duplicates += 1
                        else:
                            receiver._seen.add(msg_id)
                            receiver.seen_ids.append(msg_id)
                self.send_response(code)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                answer = json.dumps({"ok": 200 <= code < 300}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if not receiver.trickle:
                    self.wfile.write(answer)
                    return
                for byte in answer:
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the sender stopped listening, as it should
                        return
                    time.sleep(receiver.trickle)

            def log_message(self, *args):
                pass

        self._seen: set[str] = set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, host="127.0.0.1", path="/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
