"""A local page where a user draws and the app's own model answers.

`serve(model_path, host, port)` serves one page (`demo_page/index.html`,
plain HTML, CSS and JavaScript, nothing from the network) and one endpoint:

  POST /classify   body: the canvas as a PNG (or JPEG); answer (JSON): the
                   top 3 categories and probabilities, the 28x28 drawing the
                   model saw, whether the canvas was blank, milliseconds
  GET  /info       the model's file, its categories and canvas size

The page posts the canvas while the user draws. Answers come from the
canvas `.tflite` that the Android assets receive, run by
`inference.classify_pictures` in LiteRT, the code path of the export's
checks and of `quickdraw-predict`: if a doodle works here, it works in the
app.

The server is the standard library's `ThreadingHTTPServer`: a page and one
JSON endpoint on 127.0.0.1 need no framework. Requests are served in
threads; the interpreter, which is not thread-safe, runs one at a time.
Bad requests get a 4xx status with a one-line reason and the server goes
on.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from importlib import resources

import numpy as np
import tensorflow as tf

from quickdraw import canvases, inference, tflite_metadata
from quickdraw.errors import QuickDrawError

MAX_BODY_BYTES = 4 * 1024 * 1024  # a 1024x1024 canvas as PNG is well under
TOP_K = 3


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
            "categories": self.labels, "canvas": [height, width]}

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
            "blank": blank, "drawing": drawing.ravel().tolist(),
            "milliseconds": 1000 * (time.perf_counter() - start)}


def decode_picture(body: bytes) -> np.ndarray:
  """An uploaded PNG or JPEG as opaque pixels.

  Raises:
    ValueError: the body is not such a picture.
  """
  try:
    picture = tf.io.decode_image(body, expand_animations=False).numpy()
  except (tf.errors.OpError, ValueError):
    raise ValueError("the body is not a PNG or JPEG image") from None
  if picture.ndim != 3 or min(picture.shape[:2]) < 1:
    raise ValueError("the body is not a picture")
  return canvases.composite_over_white(picture)


def page() -> bytes:
  return (resources.files("quickdraw") / "demo_page" / "index.html"
          ).read_bytes()


def make_handler(classifier: Classifier):
  """The request handler class, bound to `classifier`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "quickdraw-demo"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (base's name)
      pass  # one line per drawing update would drown the terminal

    def _send(self, status: int, body: bytes, content_type: str) -> None:
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def _json(self, status: int, value) -> None:
      self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, reason: str) -> None:
      self._json(status, {"error": reason})

    def do_GET(self):  # noqa: N802 (the base class's naming)
      if self.path in ("/", "/index.html"):
        self._send(200, page(), "text/html; charset=utf-8")
      elif self.path == "/info":
        self._json(200, classifier.info())
      elif self.path == "/classify":
        self._error(405, "use POST with the canvas as a PNG body")
      else:
        self._error(404, f"no such page: {self.path}; try /")

    def do_POST(self):  # noqa: N802
      if self.path != "/classify":
        self.close_connection = True
        self._error(404 if self.path not in ("/", "/info") else 405,
                    f"cannot POST {self.path}; POST a PNG to /classify")
        return
      try:
        length = int(self.headers.get("Content-Length", ""))
      except ValueError:
        self.close_connection = True
        self._error(411, "send a Content-Length header")
        return
      if length > MAX_BODY_BYTES:
        self.close_connection = True  # the body is not read
        self._error(413, f"body of {length} bytes is over the limit of "
                         f"{MAX_BODY_BYTES} bytes; send a smaller canvas")
        return
      body = self.rfile.read(length)
      try:
        picture = decode_picture(body)
      except ValueError as e:
        self._error(400, str(e))
        return
      self._json(200, classifier.classify(picture))

    def _not_allowed(self):
      self.close_connection = True
      self._error(405, f"{self.command} is not served; GET / or POST "
                       "/classify")

    do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

  return Handler


def make_server(classifier: Classifier, host: str = "127.0.0.1",
                port: int = 8000) -> http.server.ThreadingHTTPServer:
  """The demo's server, bound and ready (`serve_forever` to run it).

  Raises:
    QuickDrawError: the address cannot be bound.
  """
  try:
    server = http.server.ThreadingHTTPServer((host, port),
                                             make_handler(classifier))
  except OSError as e:
    raise QuickDrawError(f"cannot listen on {host}:{port} ({e.strerror or e})"
                         "; pass another --port (0 picks a free one)"
                         ) from None
  server.daemon_threads = True
  return server
