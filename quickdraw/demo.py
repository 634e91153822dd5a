"""A local page where a user draws and the app's own model answers.

`serve(model_path, host, port)` serves one page (`demo_page/index.html`,
plain HTML, CSS and JavaScript, nothing from the network) and one endpoint:

  POST /classify   body: the canvas as a PNG (or JPEG); answer (JSON): the
                   top 3 categories and probabilities, the 28x28 drawing the
                   model saw, whether the canvas was blank, milliseconds
  GET  /info       the model's file, its categories and canvas size, and
                   with a collection, its counts per label
  POST /collect?label=NAME   (with --collect_dir, `collect.Collector`)
                   body: the canvas as a PNG; saved under NAME's folder;
                   answer: the file and the counts per label

The page posts the canvas while the user draws. Answers come from the
canvas `.tflite` that the Android assets receive, run by
`inference.classify_pictures` in LiteRT, the code path of the export's
checks and of `quickdraw-predict`: if a doodle works here, it works in the
app.

The server is the standard library's `ThreadingHTTPServer`: a page and one
JSON endpoint on 127.0.0.1 need no framework. Requests are served in
threads; the interpreter, which is not thread-safe, runs one at a time.
Bad requests get a 4xx status with a one-line reason and the server goes
on. The demo may listen on a network (--host), so a request is checked
before anything costly: the Content-Length must be a number within
MAX_BODY_BYTES and the body that long; the picture's size is read from its
header (Pillow opens only the header) and anything over MAX_PIXELS is
refused before a pixel is decoded; at most `max_in_flight` classifications
wait at a time, and one more gets 503 with Retry-After.
"""

from __future__ import annotations

import http.server
import ipaddress
import io
import json
import os
import re
import threading
import time
import urllib.parse
import warnings
from importlib import resources

import numpy as np
import tensorflow as tf
from PIL import Image

from quickdraw import canvases, collect, inference, tflite_metadata
from quickdraw.export import contracts
from quickdraw.errors import QuickDrawError

MAX_BODY_BYTES = 4 * 1024 * 1024  # a 1024x1024 canvas as PNG is well under
# A phone's canvas is at most a few million pixels; a picture over this
# would take seconds and gigabytes to decode (a 428 KB PNG can hold
# 20000x20000 pixels).
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 8192
MAX_IN_FLIGHT = 4
BODY_TIMEOUT_S = 5.0  # a client that sends less than it said
TOP_K = 3
_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


class Classifier:
  """The canvas model, one request at a time.

  Args:
    model_path: A canvas `.tflite` (uint8 canvas input) with its labels
      inside, as quickdraw-export writes it.

  Raises:
    QuickDrawError: not such a model.
  """

  def __init__(self, model_path: str):
    self.path = model_path
    self.predictor = inference.load_predictor(model_path)
    if not self.predictor.takes_canvas:
      raise QuickDrawError(
          f"--model={model_path} takes drawings, not canvases; pass the "
          "canvas model (model_canvas*.tflite, or the app's model.tflite)")
    with open(model_path, "rb") as f:
      try:
        self.labels = tflite_metadata.read_labels(f.read())
      except (KeyError, ValueError, OSError):
        raise QuickDrawError(
            f"--model={model_path} has no labels inside; re-export it with "
            "quickdraw-export") from None
    self._lock = threading.Lock()
    self.score_threshold = contracts.score_threshold_for(model_path) or 0.0
    # The first calls set up the interpreter and TensorFlow's kernels (about
    # a second): before the server answers anyone. The page's canvas is
    # 512 px.
    for side in (512, self.predictor.canvas_shape[0]):
      blank = np.full((side, side, 3), 255, np.uint8)
      self.classify(decode_picture(tf.io.encode_png(blank).numpy()))

  def info(self) -> dict:
    height, width = self.predictor.canvas_shape
    return {"model": os.path.basename(self.path),
            "model_path": os.path.abspath(self.path),
            "categories": self.labels, "canvas": [height, width],
            "score_threshold": self.score_threshold}

  def classify(self, picture: np.ndarray) -> dict:
    """The answer for one opaque picture (H, W, 1 or 3)."""
    start = time.perf_counter()
    with self._lock:
      drawings, probabilities = inference.classify_pictures(
          self.predictor, [picture])
    drawing, p = drawings[0], probabilities[0]
    blank = not drawing.any()
    best = [] if blank else np.argsort(-p)[:TOP_K]
    return {"top": [{"category": self.labels[i],
                     "probability": float(p[i])} for i in best],
            "blank": blank,
            "sure": bool(not blank and p.max() >= self.score_threshold),
            "drawing": drawing.ravel().tolist(),
            "milliseconds": 1000 * (time.perf_counter() - start)}


class TooLarge(ValueError):
  """A picture over MAX_PIXELS or MAX_SIDE (HTTP 413)."""


def picture_size(body: bytes) -> tuple[int, int]:
  """(width, height) from a picture's header, nothing decoded.

  Raises:
    ValueError: not a picture or a corrupt header.
    TooLarge: over MAX_PIXELS or MAX_SIDE.
  """
  try:
    with warnings.catch_warnings():
      # Pillow's own bomb warning; the limit below is far lower.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(body), formats=_FORMATS) as image:
        width, height = image.size
  except Image.DecompressionBombError as e:  # over Pillow's own limit
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    raise TooLarge(
        f"the picture has {pixels.group(1) if pixels else 'too many'} "
        f"pixels, over the limit of {MAX_PIXELS} pixels; send a smaller "
        "canvas") from None
  except Exception:  # noqa: BLE001 (Pillow raises many kinds for bad data)
    raise ValueError("the body is not a PNG or JPEG image (or its header is "
                     "corrupt)") from None
  if width < 1 or height < 1:
    raise ValueError("the picture's header gives no size")
  if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
    raise TooLarge(f"the picture is {width}x{height} pixels, over the "
                     f"limit of {MAX_PIXELS} pixels (and {MAX_SIDE} a side)"
                     "; send a smaller canvas")
  return width, height


def decode_picture(body: bytes) -> np.ndarray:
  """An uploaded PNG or JPEG as opaque pixels, its size checked first
  (`picture_size`).

  Raises:
    ValueError: the body is not such a picture, or too large.
  """
  picture_size(body)  # from the header: too large is refused undecoded
  try:
    return canvases.decode_picture(body, "the body")
  except QuickDrawError:
    raise ValueError("the body is not a PNG or JPEG image") from None


def page() -> bytes:
  return (resources.files("quickdraw") / "demo_page" / "index.html"
          ).read_bytes()


def make_handler(classifier: Classifier, max_in_flight: int = MAX_IN_FLIGHT,
                 collector: collect.Collector | None = None):
  """The request handler class, bound to `classifier` (and `collector`, if
  drawings are collected); at most `max_in_flight` pictures are decoded,
  classified or saved at a time."""
  in_flight = threading.BoundedSemaphore(max_in_flight)

  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "quickdraw-demo"
    protocol_version = "HTTP/1.1"
    timeout = 60.0  # an idle keep-alive connection is closed after this

    def log_message(self, format, *args):  # noqa: A002 (base's name)
      pass  # one line per drawing update would drown the terminal

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
      self.send_response(status)
      for key, value in (headers or {}).items():
        self.send_header(key, value)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      try:
        self.end_headers()
        self.wfile.write(body)
      except (BrokenPipeError, ConnectionResetError):
        # The browser closed the page mid-answer: nothing to tell anyone.
        self.close_connection = True

    def _json(self, status: int, value) -> None:
      self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, reason: str) -> None:
      self._json(status, {"error": reason})

    def do_GET(self):  # noqa: N802 (the base class's naming)
      if self.path in ("/", "/index.html"):
        self._send(200, page(), "text/html; charset=utf-8")
      elif self.path == "/info":
        self._json(200, {**classifier.info(), "collect": (
            None if collector is None else collector.counts())})
      elif self.path == "/classify" or (
          collector is not None
          and urllib.parse.urlsplit(self.path).path == "/collect"):
        self._error(405, "use POST with the canvas as a PNG body")
      else:
        self._error(404, f"no such page: {self.path}; try /")

    def do_POST(self):  # noqa: N802
      url = urllib.parse.urlsplit(self.path)
      route = url.path
      if route == "/collect" and collector is not None:
        query = urllib.parse.parse_qs(url.query)
        try:
          label = collect.check_label(query.get("label", [""])[0])
        except ValueError as e:
          self.close_connection = True  # the body is not read
          self._error(400, str(e))
          return
      elif self.path != "/classify":
        self.close_connection = True
        self._error(404 if self.path not in ("/", "/info") else 405,
                    f"cannot POST {self.path}; POST a PNG to /classify")
        return
      length = self.headers.get("Content-Length")
      if length is None:
        self.close_connection = True
        self._error(411, "send a Content-Length header")
        return
      if not length.strip().isdigit():  # also refuses "-5" and "1e9"
        self.close_connection = True  # where the body ends is unknown
        self._error(400, f"Content-Length {length[:40]!r} is not a number "
                         "of bytes")
        return
      length = int(length)
      if length > MAX_BODY_BYTES:
        self.close_connection = True  # the body is not read
        self._error(413, f"body of {length} bytes is over the limit of "
                         f"{MAX_BODY_BYTES} bytes; send a smaller canvas")
        return
      if not in_flight.acquire(blocking=False):
        self.close_connection = True
        self._send(503, json.dumps({
            "error": "busy: too many drawings in flight; try again in a "
                     "second"}).encode(), "application/json",
                   {"Retry-After": "1"})
        return
      try:
        status, answer = self._picture(length)
        if status == 200 and route == "/classify":
          answer = classifier.classify(answer)
        elif status == 200:
          try:
            answer = collector.save(label, answer)
          except OSError as e:
            status, answer = 507, {"error": "cannot save the drawing in "
                                            f"{collector.folder}: "
                                            f"{e.strerror or e}"}
      finally:
        # Before the answer goes out: a client that has its answer may
        # send the next drawing at once, and must find the slot free.
        in_flight.release()
      self._json(status, answer)

    def _picture(self, length: int) -> tuple[int, object]:
      """Reads and decodes the body: (200, the picture) or (status, JSON
      error)."""
      self.connection.settimeout(BODY_TIMEOUT_S)
      try:
        body = self.rfile.read(length)
      except TimeoutError:
        body = b""
      finally:
        self.connection.settimeout(self.timeout)
      if len(body) < length:
        self.close_connection = True
        return 400, {"error": f"the body ended after {len(body)} of the "
                              f"{length} bytes its Content-Length gave"}
      try:
        return 200, decode_picture(body)
      except ValueError as e:
        return 413 if isinstance(e, TooLarge) else 400, {"error": str(e)}

    def _not_allowed(self):
      self.close_connection = True
      self._error(405, f"{self.command} is not served; GET / or POST "
                       "/classify")

    do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

  return Handler


def is_loopback(host: str) -> bool:
  """Whether only this machine can reach `host` (127.0.0.1, ::1,
  localhost)."""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False  # a name or an address another machine may reach


def make_server(classifier: Classifier, host: str = "127.0.0.1",
                port: int = 8000, max_in_flight: int = MAX_IN_FLIGHT,
                collector: collect.Collector | None = None
                ) -> http.server.ThreadingHTTPServer:
  """The demo's server, bound and ready (`serve_forever` to run it).

  Raises:
    QuickDrawError: the address cannot be bound.
  """
  try:
    server = http.server.ThreadingHTTPServer((host, port),
                                             make_handler(classifier,
                                                          max_in_flight,
                                                          collector))
  except OSError as e:
    raise QuickDrawError(f"cannot listen on {host}:{port} ({e.strerror or e})"
                         "; pass another --port (0 picks a free one)"
                         ) from None
  server.daemon_threads = True
  return server
