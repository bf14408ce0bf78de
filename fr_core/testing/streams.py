"""A live MJPEG-over-HTTP camera for tests: a real network stream OpenCV reads, that a test
can pause (the camera stalls), resume, or cut (the connection drops)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


class MjpegServer:
    """Serves ``frames`` (BGR arrays) in a loop at ``fps`` as multipart/x-mixed-replace on
    ``http://127.0.0.1:<port>/stream.mjpg``; ``pause()`` stops sending without closing,
    ``resume()`` goes on, ``cut()`` closes every open connection."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 30.0) -> None:
        import cv2

        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        if not self.jpegs:
            raise ValueError("MjpegServer needs at least one frame")
        self.fps = fps
        self.sent = 0
        self.connections = 0
        self._running = threading.Event()
        self._running.set()
        self._generation = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.connections += 1
                generation = server._generation
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while server._generation == generation and not server._closed:
                        if not server._running.wait(0.05):
                            continue
                        jpeg = server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(jpeg)).encode()
                            + b"\r\n\r\n"
                            + jpeg
                            + b"\r\n"
                        )
                        server.sent += 1
                        i += 1
                        time.sleep(1 / server.fps)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._closed = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cut(self) -> None:
        self._generation += 1

    def close(self) -> None:
        self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
