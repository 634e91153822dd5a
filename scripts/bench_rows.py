"""A sampled run's fetch: bytes, requests and time against whole files.

  python scripts/bench_rows.py --latency_ms=50

Serves official-size files (`range_server.VirtualFile`: the official
records' sizes and 80-byte headers, rows made on demand) from a local
server that honours Range requests with --latency_ms added to each, and
opens `QuickDrawSource` on an empty data directory for each case: the
quickstart's 10 categories and all 345, at --samples_per_class. Prints the
rows' own bytes, the bytes and requests the fetch took, the whole files'
bytes it replaces, and the wall time; then a rerun from the cache.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

from absl import app, flags

from quickdraw import categories as categories_lib
from quickdraw.testing import range_server
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.npy_files import PIXELS

QUICKSTART = ("airplane", "alarm clock", "apple", "banana", "bicycle", "cat",
              "dog", "fish", "house", "star")

FLAGS = flags.FLAGS
flags.DEFINE_integer("latency_ms", 50, "Milliseconds added to each request.")
flags.DEFINE_integer("samples_per_class", 1000, "Rows per category.")
flags.DEFINE_list("cases", ["quickstart", "all"],
                  "quickstart (10 categories) and/or all (345).")


def _run(server: range_server.RangeServer, names: Sequence[str]) -> None:
  official = categories_lib.official_categories()
  folder = tempfile.mkdtemp(prefix="bench_rows_")
  try:
    config = DataConfig(categories=tuple(names), data_dir=folder,
                        download_base_url=server.url,
                        samples_per_class=FLAGS.samples_per_class)
    for attempt in ("fetch", "rerun from the cache"):
      requests, sent = server.requests, server.bytes_sent
      start = time.perf_counter()
      source = QuickDrawSource.open(config, progress_stream=io.StringIO())
      seconds = time.perf_counter() - start
      rows = sum(source.num_selected(c) for c in range(source.num_classes))
      whole = sum(official[n].size for n in names)
      fetched = server.bytes_sent - sent
      print(f"  {len(names)} categories, {attempt}: {rows:,} rows = "
            f"{rows * PIXELS / 1e6:.1f} MB of rows; fetched "
            f"{fetched / 1e6:.2f} MB ({fetched / (rows * PIXELS):.2f}x the "
            f"rows) in {server.requests - requests:,} requests, "
            f"{seconds:.1f} s; whole files {whole / 1e9:.2f} GB")
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str]) -> None:
  del argv
  official = categories_lib.official_categories()
  files = {record.filename: range_server.VirtualFile(
      (record.size - range_server.OFFICIAL_HEADER_LEN) // PIXELS)
           for record in official.values()}
  with range_server.RangeServer(files,
                                latency_s=FLAGS.latency_ms / 1000) as server:
    print(f"Local Range server, {FLAGS.latency_ms} ms a request, "
          f"{FLAGS.samples_per_class} rows per category, "
          f"{os.cpu_count()} CPUs:")
    if "quickstart" in FLAGS.cases:
      _run(server, QUICKSTART)
    if "all" in FLAGS.cases:
      _run(server, sorted(official))


if __name__ == "__main__":
  app.run(main)
