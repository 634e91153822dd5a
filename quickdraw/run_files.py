"""A run's folder: where its files go, its run.json, and its model.

quickdraw-train writes a run into --output_dir; quickdraw-export, predict
and the demo read it back from there. The names and the run.json record
live here, so that a writer and its readers never disagree.
"""

from __future__ import annotations

import json
import os

from quickdraw import atomic_files
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError

MODEL_FILENAME = "model.keras"
RUN_FILENAME = "run.json"  # the run's settings: {"data", "train", ...}

def write_run(output_dir: str, run: dict) -> None:
  """Writes run.json (atomically), its data folders as absolute paths: a
  relative --data_dir or --image_dir must still be found by quickdraw-export
  run from another folder."""
  data = dict(run.get("data", {}))
  for name in ("data_dir", "image_dir"):
    if data.get(name):
      data[name] = os.path.abspath(data[name])
  if data:
    run = {**run, "data": data}
  atomic_files.write_text(os.path.join(output_dir, RUN_FILENAME),
                          json.dumps(run, indent=2) + "\n")


def read_run(output_dir: str) -> tuple[dict, DataConfig]:
  """A trained run's run.json, and the data settings in it.

  Raises:
    QuickDrawError: the file is missing or unreadable.
  """
  path = os.path.join(output_dir, RUN_FILENAME)
  try:
    with open(path) as f:
      run = json.load(f)
    # Runs from before other categories were used had none: exporting
    # them again must not start fetching some.
    return run, DataConfig(**{"other_categories": "none", **run["data"]})
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise QuickDrawError(f"{path} is missing or unreadable ({e}); "
                         "re-run quickdraw-train") from None


def recorded_export(export, report: dict | None = None) -> dict:
  """What run.json records of an export (an `export.ExportConfig`, or
  None): where the app's files went, and which variant they got (the
  export `report`'s, which is float32 when the asked-for one lost too
  much)."""
  assets = export.android_assets_dir if export else ""
  model = export.android_model if export else ""
  if report and "android_assets" in report:
    model = report["android_assets"]["given"]
  return {"android_assets_dir": os.path.abspath(os.path.expanduser(assets))
          if assets else "", "android_model": model}


def record_export(output_dir: str, export, report: dict | None = None
                  ) -> None:
  """Writes `recorded_export` into the run's run.json."""
  path = os.path.join(output_dir, RUN_FILENAME)
  with open(path) as f:
    run = json.load(f)
  run["export"] = recorded_export(export, report)
  write_run(output_dir, run)


def load_model(path: str):
  """The Keras model saved at `path` (uncompiled).

  Raises:
    QuickDrawError: it is missing or does not load, in one line.
  """
  import keras  # here: reading a run's settings needs no Keras

  from quickdraw import losses  # noqa: F401 (registers the loss and metric)
  if not os.path.isfile(path):
    raise QuickDrawError(f"no trained model at {path}; run quickdraw-train "
                         "first, or pass its --output_dir")
  try:
    return keras.models.load_model(path, compile=False)
  except Exception as e:  # Keras raises several kinds for a bad file
    lines = str(e).strip().splitlines()
    raise QuickDrawError(
        f"{path} is not a Keras model that loads ("
        f"{lines[0] if lines else type(e).__name__}); train the run again "
        "with quickdraw-train") from None
