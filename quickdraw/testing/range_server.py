"""A local HTTP server of category files that honours single `Range`
requests, as cloud storage does: for the tests and benchmarks of
`remote_rows`, which cannot reach the official mirror.

It counts requests and bytes, and can ignore `Range` (answer 200 with the
whole file), drop connections part-way through a body, answer 503, lie
about the total length, and add latency to every request. Files are real
ones on disk or `VirtualFile`s of any size whose bytes are computed per
request (official-size files without 40 GB of disk).
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import numpy as np

from quickdraw.npy_files import PIXELS

OFFICIAL_HEADER_LEN = 80


def official_header(num_rows: int) -> bytes:
  """The 80-byte `.npy` v1.0 header of the official files, for (N, 784)
  uint8 (numpy now pads headers to 128 bytes; the official files are
  older)."""
  text = (f"{{'descr': '|u1', 'fortran_order': False, "
          f"'shape': ({num_rows}, {PIXELS}), }}")
  room = OFFICIAL_HEADER_LEN - 10 - 1
  if len(text) > room:
    raise ValueError(f"{num_rows} rows do not fit an 80-byte header")
  text = text.ljust(room) + "\n"
  return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


@dataclasses.dataclass(frozen=True)
class VirtualFile:
  """An official-layout file whose rows are made on demand: row r's pixels
  are a fixed function of (r, column)."""
  num_rows: int

  @property
  def size(self) -> int:
    return OFFICIAL_HEADER_LEN + self.num_rows * PIXELS

  def read(self, start: int, stop: int) -> bytes:
    header = official_header(self.num_rows)
    out = bytearray()
    if start < OFFICIAL_HEADER_LEN:
      out += header[start:min(stop, OFFICIAL_HEADER_LEN)]
      start = OFFICIAL_HEADER_LEN
    if stop > start:
      first = (start - OFFICIAL_HEADER_LEN) // PIXELS
      last = (stop - OFFICIAL_HEADER_LEN - 1) // PIXELS + 1
      rows = self.rows(first, last).tobytes()
      skip = start - OFFICIAL_HEADER_LEN - first * PIXELS
      out += rows[skip:skip + stop - start]
    return bytes(out)

  @staticmethod
  def rows(first: int, stop: int) -> np.ndarray:
    r = np.arange(first, stop, dtype=np.uint64)[:, None]
    c = np.arange(PIXELS, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
      return ((r * np.uint64(2654435761) + c * np.uint64(40503))
              >> np.uint64(7)).astype(np.uint8)


class _File:
  def __init__(self, source: str | VirtualFile):
    self.source = source
    self.size = (source.size if isinstance(source, VirtualFile)
                 else os.path.getsize(source))

  def read(self, start: int, stop: int) -> bytes:
    if isinstance(self.source, VirtualFile):
      return self.source.read(start, stop)
    with open(self.source, "rb") as f:
      f.seek(start)
      return f.read(stop - start)


class RangeServer:
  """Serves `files` (name -> path or VirtualFile) at `url`/<quoted name>.

  Attributes (set them between requests):
    latency_s: Seconds added before every answer.
    ignore_range: Answer every GET with 200 and the whole file.
    drop_next: Close the connection half-way through this many more bodies.
    fail_next: Answer this many more requests with 503.
    total_override: The total length to claim in Content-Range.
    requests, bytes_sent: Counters (bodies only).
    served: (file name, first byte, stop) of every range answered, retries
      included.
  """

  def __init__(self, files: dict[str, str | VirtualFile],
               latency_s: float = 0.0):
    self.files = {name: _File(src) for name, src in files.items()}
    self.latency_s = latency_s
    self.ignore_range = False
    self.drop_next = 0
    self.fail_next = 0
    self.total_override: int | None = None
    self.requests = 0
    self.bytes_sent = 0
    self.served: list[tuple[str, int, int]] = []
    self._in_flight = 0
    self._last_request = 0.0
    self._lock = threading.Lock()
    self._httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), _handler(self))
    self._httpd.daemon_threads = True
    # Polled every 50 ms, not 0.5 s: shutdown() waits for the next poll,
    # and the tests start and stop a server each.
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    kwargs={"poll_interval": 0.05},
                                    daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._httpd.server_address[1]}"

  def __enter__(self) -> RangeServer:
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._httpd.shutdown()
    self._httpd.server_close()

  def _take(self, name: str) -> bool:
    with self._lock:
      if getattr(self, name) > 0:
        setattr(self, name, getattr(self, name) - 1)
        return True
    return False

  def _count(self, sent: int) -> None:
    with self._lock:
      self.requests += 1
      self.bytes_sent += sent

  def _flight(self, change: int) -> None:
    with self._lock:
      self._in_flight += change
      self._last_request = time.monotonic()

  def wait_idle(self, timeout_s: float = 60.0, quiet_s: float = 0.5) -> None:
    """Returns once no request has been answered or begun for `quiet_s`: a
    client interrupted mid-download may leave requests running (a thread
    pool's), some still on their way to the server on a loaded machine,
    whose bytes would count towards the next measurement."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      with self._lock:
        if (not self._in_flight and
            time.monotonic() - self._last_request >= quiet_s):
          return
      time.sleep(0.01)
    raise TimeoutError(f"requests still running after {timeout_s} s")


def _handler(server: RangeServer) -> Callable:

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
      pass

    def do_GET(self):
      server._flight(+1)
      try:
        self._answer()
      finally:
        server._flight(-1)

    def _answer(self):
      if server.latency_s:
        time.sleep(server.latency_s)
      name = urllib.parse.unquote(self.path.lstrip("/"))
      f = server.files.get(name)
      if f is None:
        return self._plain(404, b"no such file")
      if server._take("fail_next"):
        return self._plain(503, b"try again")
      match = re.fullmatch(r"bytes=(\d+)-(\d*)",
                           self.headers.get("Range", ""))
      if server.ignore_range or not match:
        return self._body(200, f, 0, f.size)
      start = int(match[1])
      stop = min(int(match[2]) + 1 if match[2] else f.size, f.size)
      if start >= f.size:
        return self._plain(416, b"range not satisfiable")
      total = (server.total_override if server.total_override is not None
               else f.size)
      with server._lock:
        server.served.append((name, start, stop))
      self._body(206, f, start, stop,
                 {"Content-Range": f"bytes {start}-{stop - 1}/{total}"})

    def _plain(self, status: int, text: bytes) -> None:
      self.send_response(status)
      self.send_header("Content-Length", str(len(text)))
      self.end_headers()
      self.wfile.write(text)
      server._count(len(text))

    def _body(self, status: int, f: _File, start: int, stop: int,
              headers: dict | None = None) -> None:
      drop = server._take("drop_next")
      self.send_response(status)
      self.send_header("Content-Length", str(stop - start))
      self.send_header("Accept-Ranges", "bytes")
      for key, value in (headers or {}).items():
        self.send_header(key, value)
      self.end_headers()
      if drop:
        stop = start + (stop - start) // 2
      sent = 0
      try:
        for chunk in range(start, stop, 1 << 20):
          data = f.read(chunk, min(stop, chunk + (1 << 20)))
          self.wfile.write(data)
          sent += len(data)
      except (BrokenPipeError, ConnectionResetError):
        self.close_connection = True
      server._count(sent)
      if drop:
        self.close_connection = True

  return Handler
