"""The quality gate's library: reference runs, their figures as the app sees
them, and the comparison with a committed baseline.

The product is the app's accuracy on its canvas. A reference run is a fixed
`quickdraw-train` command on the real subset (`REFERENCE_RUNS`); `score_run`
scores its exported app model through MediaPipe's ImageClassifier, as an
Android app loads it, on pen-drawn canvases of its test drawings
(`canvases.pen_suite`), on junk and on doodles of categories it never saw,
each against the model's own score threshold; `compare` says which figure
fell beyond its noise band. `scripts/bench_quality.py` is the command.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from quickdraw import canvases, run_files, splits
from quickdraw import others as others_lib
from quickdraw.export import contracts
from quickdraw.errors import QuickDrawError

# The retrain route's ten categories (the issue that made this gate measured
# its fall on them): everyday shapes, a few that look alike.
RETRAIN_CATEGORIES = ("airplane", "apple", "banana", "bicycle", "cat", "crown",
                      "house", "skull", "smiley face", "star")
SHARED_CATEGORIES = (
    "airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book",
    "cat", "circle", "crown", "diamond", "dog", "eye", "fish", "flower",
    "house", "rainbow", "skull", "smiley face", "square", "star", "train")
# The 10-category runs' other categories (`--other_categories`: exposure
# and the threshold's held-out ones); the gate scores "not sure" on the
# shared categories outside both (dog, fish, flower, square: one like a
# cat, one like a house), which no part of the run saw.
RETRAIN_OTHERS = ("alarm clock", "bird", "book", "circle", "diamond", "eye",
                  "rainbow", "train")


# Runs of other sizes (scripts/bench_not_sure.py): the three, the
# gate's ten.
CATEGORIES_OF_SIZE = {3: ("apple", "banana", "fish"), 10: RETRAIN_CATEGORIES}


def categories_of_size(count: int, available: Sequence[str]
                       ) -> tuple[str, ...]:
  """`count` categories of those `available`: CATEGORIES_OF_SIZE's when
  all are there, else the first `count`."""
  chosen = CATEGORIES_OF_SIZE.get(count, tuple(available[:count]))
  if set(chosen) - set(available):
    return tuple(available[:count])
  return chosen


@dataclasses.dataclass(frozen=True)
class ReferenceRun:
  """A fixed training command of the gate.

  Attributes:
    flagfile: A shipped config (quickdraw/configs/), or "" for the
      defaults.
    architecture: The backbone; its weights come from --weights_dir.
    categories: What it trains on.
    flags: Further flags, after the flagfile's.
    canvases: Test drawings re-drawn as canvases (spread over the split).
    others: Drawings of each category outside the run, as canvases.
    canvas_side: The canvases' side in pixels.
  """
  flagfile: str
  architecture: str
  categories: tuple[str, ...]
  flags: tuple[str, ...] = ()
  canvases: int = 1000
  others: int = 100
  canvas_side: int = 512


REFERENCE_RUNS = {
    # The old recipe's route: retrain_compat.flags (its steps and batch),
    # on the v1 width whose real weights the subset has.
    "retrain": ReferenceRun(
        "retrain_compat.flags", "mobilenet_0.25_224", RETRAIN_CATEGORIES,
        (f"--other_categories={','.join(RETRAIN_OTHERS)}",)),
    # quickdraw-train's defaults, frozen, on every category at hand.
    "v2_22": ReferenceRun("", "mobilenet_v2_0.5_224", SHARED_CATEGORIES),
    # The accuracy recipe (fine-tuned): about 20 minutes on 2 cores.
    "accurate": ReferenceRun("accurate.flags", "mobilenet_v2_0.5_224",
                             SHARED_CATEGORIES),
    # The suite's small run (tests/test_quality.py): the retrain route on
    # fewer drawings at 128 px, without int8, scored on 256 px canvases
    # (drawing them is most of the scoring's time), in about half a minute.
    "small": ReferenceRun(
        "retrain_compat.flags", "mobilenet_0.25_224", RETRAIN_CATEGORIES,
        ("--samples_per_class=300", "--image_size=128",
         "--how_many_training_steps=0", "--epochs=30", "--quantize=",
         f"--other_categories={','.join(RETRAIN_OTHERS)}",
         # Fewer canvases for the export's checks and threshold curve: no
         # figure of the gate comes from them.
         "--check_canvases=100"),
        canvases=300, others=25, canvas_side=256),
}
DEFAULT_RUNS = ("retrain", "v2_22", "accurate")

# Figures where lower is better; every other figure is a share where
# higher is better.
LOWER_IS_BETTER = ("calibration_error", "int8_loss_points")
# The least band a figure gets, whatever the seeds' spread: a share's
# 0.5 points, calibration error's 0.005, int8's half a point.
BAND_FLOOR = {"calibration_error": 0.005, "int8_loss_points": 0.5}
SHARE_BAND_FLOOR = 0.005
# Bands are this many times the spread (max - min) over the seeds.
BAND_SPREAD = 1.5

JUNK_PER_KIND = 60
# A threshold for MediaPipe that keeps every score: its C API reads 0.0 as
# "none set" and then applies the model's own (ScoreThresholdingOptions).
EVERY_SCORE = 1e-30


def train_command(run: ReferenceRun, *, data_dir: str,
                  weights_dir: str, output_dir: str, seed: int = 0,
                  extra: Sequence[str] = ()) -> list[str]:
  """The quickdraw-train arguments of a reference run (after the program).

  Every output goes under `output_dir`; bottlenecks are shared by the runs
  in `output_dir/../bottlenecks`. `seed` seeds training alone
  (--train_seed): the drawings and their split are the same at every seed.
  """
  from quickdraw import backbones
  weights = os.path.join(weights_dir,
                         backbones.parse_architecture(
                             run.architecture).weights_filename)
  args = []
  if run.flagfile:
    args.append(f"--config={run.flagfile.removesuffix('.flags')}")
  quoted = ",".join(f'"{c}"' if " " in c else c for c in run.categories)
  args += [f"--architecture={run.architecture}", f"--weights={weights}",
           f"--categories={quoted}", f"--data_dir={data_dir}", "--nodownload",
           f"--train_seed={seed}", "--quantize=int8",
           *run.flags,
           f"--output_dir={output_dir}",
           f"--bottleneck_dir={os.path.join(os.path.dirname(output_dir), 'bottlenecks')}",
           f"--summaries_dir={os.path.join(output_dir, 'logs')}",
           f"--output_graph={os.path.join(output_dir, 'retrained_graph.pb')}",
           f"--output_labels={os.path.join(output_dir, 'retrained_labels.txt')}",
           f"--android_assets_dir={os.path.join(output_dir, 'android_assets')}",
           *extra]
  return args


def mediapipe_scores(path: str, pictures: np.ndarray,
                     categories: Sequence[str]) -> np.ndarray:
  """(N, classes) scores as MediaPipe's ImageClassifier gives them, every
  one (the caller applies the model's threshold)."""
  try:
    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision
  except ImportError:
    raise QuickDrawError(
        "needs mediapipe: pip install -e '.[test]'") from None
  options = vision.ImageClassifierOptions(
      base_options=mp_tasks.BaseOptions(model_asset_path=path),
      max_results=len(categories), score_threshold=EVERY_SCORE)
  index = {c: i for i, c in enumerate(categories)}
  scores = np.zeros((len(pictures), len(categories)), np.float32)
  with vision.ImageClassifier.create_from_options(options) as classifier:
    for i, picture in enumerate(pictures):
      image = mp.Image(image_format=mp.ImageFormat.SRGB,
                       data=np.ascontiguousarray(picture))
      for c in classifier.classify(image).classifications[0].categories:
        scores[i, index[c.category_name]] = c.score
  return scores


def other_drawings(data_dir: str, exclude: Sequence[str],
                   per_category: int) -> np.ndarray:
  """Drawings of the categories in `data_dir` outside `exclude`, spread
  over each file (the runs' own splits never see these categories)."""
  drawings = []
  for name in sorted(os.listdir(data_dir)):
    category, ext = os.path.splitext(name)
    if ext != ".npy" or category in exclude:
      continue
    rows = np.load(os.path.join(data_dir, name), mmap_mode="r")
    drawings.append(np.asarray(rows[splits.spread(len(rows),
                                                  per_category)]))
  return (np.concatenate(drawings) if drawings
          else np.zeros((0, 784), np.uint8))


def score_run(output_dir: str, canvas_drawings: int = 1000,
              others_per_category: int = 100,
              other_data_dir: str | None = None,
              canvas_side: int = 512,
              seen_per_category: int = 0) -> dict[str, float]:
  """A trained and exported run's figures, as its app sees them.

  Args:
    output_dir: The run's folder: run.json, export_report.json and the
      app's model in android_assets/ (else the recorded assets folder).
    canvas_drawings: Test drawings re-drawn as pen canvases.
    others_per_category: Drawings of each category outside the run.
    other_data_dir: Where doodles of other categories are found; None for
      the run's own data folder.
    canvas_side: The side of every canvas scored (a phone's: 512).
    seen_per_category: New drawings (rows the run did not read) of each of
      the run's other categories, for exposure_refused and
      held_out_refused; 0 for neither.

  Returns:
    {figure: value}: npy_top1 (the Keras model on the whole test split);
    canvas_top1 and canvas_<axis>_<kind> (the app's top-1 on the pen
    suite, overall and per pen, theme and place); canvas_right_and_sure
    (right at or above the threshold); junk_refused and others_refused
    (under the threshold; the latter only where the data folder holds
    other categories); with `seen_per_category`, exposure_refused and
    held_out_refused (the run's other categories that trained and that
    chose the threshold); calibration_error (test ECE after calibration);
    int8_loss_points (when an int8 variant was exported).
  """
  from quickdraw.data_source import QuickDrawSource, drawings_from_split
  from quickdraw.splits import Split
  run, data = run_files.read_run(output_dir)
  assets = os.path.join(output_dir, "android_assets")
  if not os.path.isdir(assets):
    assets = run.get("export", {}).get("android_assets_dir", "")
  model = os.path.join(assets, "model.tflite")
  if not os.path.exists(model):
    raise QuickDrawError(f"{model} is missing; export the run with "
                         "--android_assets_dir")
  # None for runs exported before calibration: no refusal figures then.
  threshold = contracts.score_threshold_for(model)
  with open(os.path.join(output_dir, "export_report.json")) as f:
    report = json.load(f)
  source = QuickDrawSource.open(data)
  figures = {"npy_top1": float(run["test"]["top1"])}

  drawings, labels = drawings_from_split(source, Split.TEST,
                                         canvas_drawings)
  pictures, kinds = canvases.pen_suite(drawings, canvas_side, seed=0)
  scores = mediapipe_scores(model, pictures, source.categories)
  right = scores.argmax(1) == labels
  figures["canvas_top1"] = float(right.mean())
  for axis, kind_of in kinds.items():
    for kind in dict.fromkeys(kind_of):
      figures[f"canvas_{axis}_{kind}"] = float(right[kind_of == kind].mean())
  if threshold is not None:
    figures["canvas_right_and_sure"] = float(
        np.mean(right & (scores.max(1) >= threshold)))
    # Doodles of categories no part of the run saw: neither its own nor
    # the other categories it trained or chose its threshold on.
    seen = run.get("other_categories", {})
    exclude = (*source.categories, *seen.get("exposure", ()),
               *seen.get("held_out", ()))
    figures.update(_refused(model, threshold, source.categories, exclude,
                            other_data_dir or data.data_dir,
                            others_per_category, canvas_side))
    if seen_per_category and seen:
      # run.json has said how many rows of each it read since it named
      # them (`others.describe`).
      where = dataclasses.replace(data,
                                  data_dir=other_data_dir or data.data_dir)
      for kind in ("exposure", "held_out"):
        drawings = others_lib.held_back(where, seen[kind],
                                        seen["drawings_per_category"],
                                        seen_per_category)
        if len(drawings):  # none when the run read every row of its files
          figures[f"{kind}_refused"] = _share_under(
              model, canvases.pen_suite(drawings, canvas_side, seed=2)[0],
              source.categories, threshold)
  if "calibration" in report:
    figures["calibration_error"] = float(
        report["calibration"]["test_ece_after"])
  int8 = report["artifacts"].get("tflite_int8")
  if int8:
    figures["int8_loss_points"] = float(int8["loss_points"])
  return figures


def _share_under(model: str, pictures: np.ndarray,
                 categories: Sequence[str], threshold: float) -> float:
  """The share of `pictures` whose top score from the app's model (through
  MediaPipe) is under `threshold`: refused."""
  return float(np.mean(mediapipe_scores(model, pictures, categories).max(1)
                       < threshold))


def _refused(model: str, threshold: float, categories: Sequence[str],
             exclude: Sequence[str],
             data_dir: str, others_per_category: int, canvas_side: int
             ) -> dict[str, float]:
  """Shares of junk, and of doodles of the categories in `data_dir`
  outside `exclude` (the model's own first), under its score
  threshold."""
  figures = {}
  junk = np.concatenate([canvases.junk(kind, JUNK_PER_KIND, canvas_side,
                                       seed=0)
                         for kind in canvases.JUNK_KINDS])
  figures["junk_refused"] = _share_under(model, junk, categories, threshold)
  others = other_drawings(data_dir, exclude, others_per_category)
  if len(others):
    figures["others_refused"] = _share_under(
        model, canvases.pen_suite(others, canvas_side, seed=1)[0],
        categories, threshold)
  return figures


def band_of(figure: str, values: Sequence[float]) -> float:
  """A figure's noise band from its values over several training seeds:
  how far training alone moves it, which is also how far another CPU's
  rounding can."""
  floor = BAND_FLOOR.get(figure, SHARE_BAND_FLOOR)
  return max(floor, BAND_SPREAD * (max(values) - min(values)))


def baseline_entry(per_seed: Sequence[dict[str, float]]) -> dict:
  """A reference run's baseline from its figures over several seeds: each
  figure's mean, its band, and the values it was measured at."""
  entry = {}
  for figure in per_seed[0]:
    values = [seed[figure] for seed in per_seed if figure in seed]
    entry[figure] = {"value": float(np.mean(values)),
                     "band": band_of(figure, values),
                     "seeds": [round(v, 5) for v in values]}
  return entry


def compare(figures: dict[str, float], baseline: dict
            ) -> list[tuple[str, float, float, float, bool]]:
  """Each figure against its baseline entry.

  Returns:
    (figure, baseline value, band, now, fell beyond the band) for every
    figure that both hold, in the baseline's order.
  """
  rows = []
  for figure, entry in baseline.items():
    if figure not in figures:
      continue
    now, value, band = figures[figure], entry["value"], entry["band"]
    worse = now - value if figure in LOWER_IS_BETTER else value - now
    rows.append((figure, value, band, now, worse > band))
  return rows


def format_comparison(name: str, rows) -> str:
  """The comparison as a table, a verdict per figure."""
  lines = [f"{name}: {'figure':<26} {'baseline':>9} {'band':>7} {'now':>8} "
           f"{'change':>8}"]
  for figure, value, band, now, fell in rows:
    lines.append(f"{' ' * len(name)}  {figure:<26} {value:9.4f} {band:7.4f} "
                 f"{now:8.4f} {now - value:+8.4f}"
                 + ("  FELL" if fell else ""))
  return "\n".join(lines)
