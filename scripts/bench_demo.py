"""The demo server under hostile requests: its memory and its answers.

  python scripts/bench_demo.py --model=runs/quickstart/model_canvas.tflite

Starts quickdraw-demo in its own process, then sends a valid 20000x20000
PNG (about 400 KB, 400 MB decoded), a 60000x8 PNG, a negative and a
non-numeric Content-Length, and a body shorter than its Content-Length,
and prints for each the status, the seconds to answer and the server's
resident memory (VmRSS) after it; then classifies a normal drawing.
"""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import tensorflow as tf
from absl import app, flags

from quickdraw import canvases
from quickdraw.testing import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The canvas model the demo serves.")
flags.mark_flag_as_required("model")


def big_png(width: int, height: int) -> bytes:
  """A valid grey PNG of zeros, compressed a row at a time."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data)))
  compressor = zlib.compressobj(9)
  row = b"\0" * (width + 1)
  data = b"".join(compressor.compress(row) for _ in range(height))
  data += compressor.flush()
  return (b"\x89PNG\r\n\x1a\n" +
          chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0,
                                     0)) +
          chunk(b"IDAT", data) + chunk(b"IEND", b""))


def rss_mb(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    line = next(l for l in f if l.startswith("VmRSS"))
  return int(line.split()[1]) / 1024


def send(port: int, head_length: str, body: bytes) -> tuple[int, float]:
  start = time.perf_counter()
  with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
    s.sendall(f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: "
              f"{head_length}\r\n\r\n".encode() + body)
    s.shutdown(socket.SHUT_WR)
    response = http.client.HTTPResponse(s)
    response.begin()
    response.read()
  return response.status, time.perf_counter() - start


def main(argv: Sequence[str]) -> None:
  del argv
  process = subprocess.Popen(
      [sys.executable, "-m", "quickdraw.cli.demo", f"--model={FLAGS.model}",
       "--port=0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
      text=True)
  try:
    line = process.stdout.readline()
    port = int(line.split(" at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
    print(f"server started: {rss_mb(process.pid):.0f} MB resident")
    drawing = tf.io.encode_png(canvases.redraw(
        synthetic.make_drawings(1, 1), 512)[0]).numpy()
    status, seconds = send(port, str(len(drawing)), drawing)
    print(f"  a drawing: {status} in {seconds:.2f} s, "
          f"{rss_mb(process.pid):.0f} MB")
    bomb = big_png(20000, 20000)
    strip = big_png(60000, 8)
    cases = [("20000x20000 PNG (%d KB)" % (len(bomb) // 1024), str(len(bomb)),
              bomb),
             ("60000x8 PNG", str(len(strip)), strip),
             ("Content-Length: -5", "-5", b"x"),
             ("Content-Length: abc", "abc", b"x"),
             ("Content-Length 1000, 10 bytes sent", "1000", b"\x89PNG" * 2)]
    for name, length, body in cases:
      before = rss_mb(process.pid)
      status, seconds = send(port, length, body)
      print(f"  {name}: {status} in {seconds:.3f} s, "
            f"{rss_mb(process.pid) - before:+.1f} MB")
    status, seconds = send(port, str(len(drawing)), drawing)
    print(f"  a drawing after them: {status} in {seconds:.2f} s, "
          f"{rss_mb(process.pid):.0f} MB resident")
  finally:
    process.terminate()
    process.wait(30)


if __name__ == "__main__":
  app.run(main)
