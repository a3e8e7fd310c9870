"""A real local webhook receiver for tests: a ThreadingHTTPServer on a free port that keeps every JSON body.

    with WebhookServer() as hook:             # or WebhookServer([500, 500]): those statuses first, then 200
        notify(..., [WebhookNotifier(hook.url)])
    hook.bodies                               # the bodies answered 200, in order
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookServer:
    def __init__(self, statuses: list[int] | None = None):
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = hook.statuses.pop(0) if hook.statuses else 200
                if status == 200:
                    hook.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
