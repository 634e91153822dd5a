"""quickdraw-demo: draw in a browser and see what the app's model answers.

Serves a local page with a drawing canvas; while you draw, the canvas goes
to the canvas .tflite that the Android assets receive, run by the same code
as the export's checks, and the page shows its top 3 categories, the 28x28
drawing it saw and the categories it knows. Ctrl-C stops it.

Examples:
  quickdraw-demo --output_dir=runs/quickstart
  quickdraw-demo --model=../MyApp/app/src/main/assets/model.tflite \\
      --host=0.0.0.0 --port=8080
  quickdraw-demo --output_dir=runs/quickstart --collect_dir=~/my_drawings
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence

from absl import flags

from quickdraw import collect, demo, export
from quickdraw.cli import common
from quickdraw.errors import QuickDrawError

FLAGS = flags.FLAGS
flags.declare_key_flag("output_dir")
common.DEFINE_path(
    "model", None,
    "A canvas .tflite to answer with; default: the one --output_dir's "
    "export gave the Android assets (model_canvas*.tflite).")
flags.DEFINE_string(
    "host", "127.0.0.1",
    "Address to listen on; 0.0.0.0 lets other devices (a phone on the same "
    "network) reach the page.")
flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.",
                     lower_bound=0, upper_bound=65535)
common.DEFINE_path(
    "collect_dir", None,
    "Collect drawings: the page gets a 'Save as' field, and each drawing "
    "saved goes to <collect_dir>/<label>/ as a PNG canvas. Then "
    "quickdraw-train --image_dir=<collect_dir> trains on them.")


def app_model(output_dir: str) -> str:
  """The canvas model a run's export gave the app (float32 if unknown).

  Raises:
    QuickDrawError: the run has no canvas model.
  """
  variant = "float32"
  try:
    with open(os.path.join(output_dir, export.REPORT)) as f:
      variant = json.load(f).get("android_assets", {}).get("given", variant)
  except (OSError, ValueError):
    pass
  path = export.ExportConfig(
      "", "", os.path.join(output_dir, "model.tflite"), output_dir
  ).tflite_path(variant, canvas=True)
  if not os.path.isfile(path):
    raise QuickDrawError(
        f"no canvas model in --output_dir={output_dir} (looked for {path}); "
        "run quickdraw-train or quickdraw-export first, or pass --model")
  return path


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise QuickDrawError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Ctrl-C (and a plain `kill`) stop the server, even when it was started
  # from a shell that ignores SIGINT for background jobs.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  classifier = demo.Classifier(FLAGS.model or app_model(FLAGS.output_dir))
  collector = (collect.Collector(FLAGS.collect_dir) if FLAGS.collect_dir
               else None)
  server = demo.make_server(classifier, FLAGS.host, FLAGS.port,
                            collector=collector)
  if not demo.is_loopback(FLAGS.host):
    print(f"{common.program_name()}: warning: --host={FLAGS.host} makes the "
          "page reachable by anyone on your network, not only this "
          "machine; use --host=127.0.0.1 unless you mean to", file=sys.stderr,
          flush=True)
  host, port = server.server_address[:2]
  shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
  try:  # from the moment the URL is out, Ctrl-C means stop
    print(f"Serving {classifier.path} ({len(classifier.labels)} categories) "
          f"at http://{shown}:{port}/ ; Ctrl-C stops it", flush=True)
    if collector is not None:
      print(f"Drawings saved on the page go to {collector.folder}/<label>/; "
            f"train on them with --image_dir={collector.folder}", flush=True)
    server.serve_forever()
  except KeyboardInterrupt:
    print("Stopped.")
  finally:
    server.server_close()


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
