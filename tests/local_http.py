"""A real HTTP server on 127.0.0.1 for download tests, and synthetic official checkpoints.

``LocalServer`` serves routes set by each test (a file, a web page, a 404, a transfer cut off
half-way) and records every request, so a test can assert that none was made. Checkpoints are
built from the official key listings in tests/data with the fixtures' synthetic-weight recipe.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from conftest import DATA_DIR, fixture_weights_module

OFFICIAL_KEYS = DATA_DIR / "swin_litemedsam_keys.txt"  # 411 keys (October 2024 code)
JUNE_2024_KEYS = DATA_DIR / "swin_litemedsam_2024-06_keys.txt"  # 403 keys


@functools.lru_cache(maxsize=2)
def checkpoint_bytes(keys_file=JUNE_2024_KEYS) -> bytes:
    """``torch.save`` of the synthetic state dict of a key listing (63 MB for the 403 keys)."""
    return save_bytes(fixture_weights_module().make_state_dict(str(keys_file)))


def synthetic_state_dict(keys_file=JUNE_2024_KEYS):
    return fixture_weights_module().make_state_dict(str(keys_file))


def save_bytes(state_dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@dataclass
class Route:
    """What the server sends for one path.

    ``cut_after``: announce the full length but close the connection after this many bytes.
    ``needs_query``: a text the query must contain, else 403 (a Drive form without its token).
    ``pause_s``: a pause after every MiB sent (a slow line, so that a test can cancel).
    """

    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    cut_after: int | None = None
    needs_query: str | None = None
    pause_s: float = 0.0


class LocalServer:
    """``ThreadingHTTPServer`` on 127.0.0.1 with a free port; ``routes`` maps paths to Routes."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                server.requests.append(self.path)
                parts = urlsplit(self.path)
                route = server.routes.get(parts.path)
                if route is None:
                    route = Route(b"<html><title>Not Found</title></html>", "text/html", 404)
                elif route.needs_query and route.needs_query not in parts.query:
                    route = Route(b"<html><title>Forbidden</title></html>", "text/html", 403)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                body = route.body if route.cut_after is None else route.body[: route.cut_after]
                for start in range(0, len(body), 1 << 20):
                    try:
                        self.wfile.write(body[start : start + (1 << 20)])
                    except OSError:  # the client hung up (a cancelled download)
                        return
                    time.sleep(route.pause_s)
                if route.cut_after is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def drive_interstitial(action: str, file_id: str = "abc") -> bytes:
    """A page shaped like Google Drive's "can't scan this file for viruses" page."""
    return f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="{file_id}">
<input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="0f1e2d3c">
</form></body></html>""".encode()


def quota_page() -> bytes:
    return b"""<html><head><title>Google Drive - Quota exceeded</title></head><body>
Too many users have viewed or downloaded this file recently. Please try accessing the file again
later. (download quota exceeded)</body></html>"""
