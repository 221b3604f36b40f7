#!/usr/bin/env python3
"""Runs the image's HEALTHCHECK script (deploy/container/healthcheck.sh)
against stand-in admin listeners on loopback: healthy (0) on a 200 from
/healthz, unhealthy (1) on a 503, on a closed port and on a listener that
never answers (within the script's 2 s); idvctl is always healthy; the
wildcard address of a `0.0.0.0:PORT` setting is reached on loopback.

Usage: healthcheck.py SCRIPT
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time


def serve(status: int) -> int:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def silent() -> int:
    """A listener that accepts and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    threading.Thread(target=lambda: [sock.accept() for _ in range(8)], daemon=True).start()
    return sock.getsockname()[1]


def closed() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def main(argv: list[str]) -> int:
    script = argv[1]
    ok, unavailable, hung, shut = serve(200), serve(503), silent(), closed()
    cases = [
        ("idv-ingest", {"INGEST_ADMIN_LISTEN": f"0.0.0.0:{ok}"}, 0, "ingest answering 200"),
        ("/usr/local/bin/idv-worker", {"WORKER_ADMIN_LISTEN": f"127.0.0.1:{ok}"}, 0, "worker answering 200"),
        ("idv-ingest", {"INGEST_ADMIN_LISTEN": f"127.0.0.1:{unavailable}"}, 1, "ingest answering 503"),
        ("idv-worker", {"WORKER_ADMIN_LISTEN": f"127.0.0.1:{shut}"}, 1, "worker not listening"),
        ("idv-worker", {"WORKER_ADMIN_LISTEN": f"127.0.0.1:{hung}"}, 1, "worker never answering"),
        ("idv-ingest", {"INGEST_ADMIN_LISTEN": f"127.0.0.1:{ok}", "WORKER_ADMIN_LISTEN": f"127.0.0.1:{shut}"}, 0,
         "ingest reads INGEST_ADMIN_LISTEN, not the worker's"),
        ("idvctl", {}, 0, "idvctl (one-shot)"),
    ]
    failures = 0
    for program, env, expected, what in cases:
        started = time.monotonic()
        result = subprocess.run(
            ["bash", script, program], env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True, timeout=10, check=False,
        )
        took = time.monotonic() - started
        if result.returncode != expected:
            failures += 1
            print(f"error: healthcheck.sh, {what}: exit {result.returncode}, expected {expected} "
                  f"({result.stderr.decode(errors='replace').strip()})")
        elif took > 5:
            failures += 1
            print(f"error: healthcheck.sh, {what}: took {took:.1f} s (Docker's timeout is 3 s)")
    if failures:
        return 1
    print(f"ok: healthcheck.sh: {len(cases)} cases (200, 503, closed, hung, idvctl)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
