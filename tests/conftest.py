"""Shared fixtures: small generated data, and absl flags ready for main([])."""

import os

# As the entry points do (quickdraw/cli/__init__.py), before TensorFlow
# loads: its oneDNN kernels, which it turns on by itself only on AVX-512
# CPUs, make MobileNets several times faster on AVX2 machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Under pytest-xdist each worker process (two on two cores, setup.cfg) runs
# TensorFlow with one thread per op: with a pool per core in each, the
# workers' threads fought over the cores (the suite 325 to 345 s against
# 362 s on the 2-core VM, 2026-12-06; the two-process distributed test 27
# to 30 s against 42 s). The tests' own subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
  os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib
import importlib
import io
import shutil
import sys
import threading
from unittest import mock

import filelock
import pytest
from absl import flags

from quickdraw.testing import synthetic
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.export import flow as export_flow
from quickdraw import data_source

# Official names, so generated files load like real ones.
CATEGORIES = ("circle", "square", "triangle", "line")
ROWS = 300
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data", "quickdraw")
SMOKE_FLAGS = os.path.join(REPO, "configs", "smoke.flags")
# configs/smoke.flags learns the generated classes with top-1 0.977 to 1.000
# over --seed=0..9 with oneDNN on and off (2-core x86); tests that train it
# require this, a margin of several points for other CPUs' rounding.
SMOKE_MIN_TOP1 = 0.9


# The test-only backbone of the family table (backbones.py: "test_tiny"),
# for tests of the workflow rather than of a MobileNet: at 32 px.
TINY = "test_tiny_32"
# configs/smoke.flags on the test backbone, with 200 drawings a category
# (test_distribute), learns the generated classes with top-1 0.978 to 1.000
# over --seed=0..7.


def smoke_args(data_dir, tmp_path, output_dir, tiny: bool = False
               ) -> list[str]:
  """configs/smoke.flags as arguments, on the tests' data and folders.

  Tests run the very configuration users run, so a change to it is tested;
  with `tiny`, on the test backbone (the smoke config's MobileNet trains in
  twice the time), for tests about what runs the training, not about it.
  """
  return [f"--flagfile={SMOKE_FLAGS}", f"--data_dir={data_dir}",
          f"--bottleneck_dir={tmp_path / 'smoke_cache'}",
          f"--output_dir={output_dir}",
          *(["--architecture=test_tiny_64"] if tiny else [])]


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
  """A folder that the first xdist worker to ask builds and every worker
  then reads (pytest-xdist's recipe: a file lock in the run's shared
  temporary folder). Yields (folder, build): build the folder's contents
  when `build` is True. A test that changes the contents copies them first
  (`copy_of`)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    # The workers' folders are popen-gwN in the run's own folder. Without
    # xdist the parent would be pytest-of-<user>, which outlives the run.
    root = root.parent
  folder = root / name
  with filelock.FileLock(str(folder) + ".lock"):
    done = folder / ".built"
    build = not done.exists()
    if build:
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
    yield folder, build
    if build:
      done.touch()


def copy_of(folder, tmp_path, name: str = "run"):
  """A private copy of a shared folder (`built_once`), for a test that
  changes it."""
  target = tmp_path / name
  shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".built"))
  return target


@pytest.fixture(scope="session", autouse=True)
def parsed_flags():
  """Lets tests read and flagsave absl flags without running app.run."""
  import quickdraw.cli.prepare  # noqa: F401  (defines every command flag)
  import quickdraw.cli.predict  # noqa: F401
  import quickdraw.cli.dump_jpeg  # noqa: F401
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["pytest"])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A folder of generated official-format files, one per CATEGORIES,
  shared by the workers (so a shared run's run.json names it)."""
  with built_once(tmp_path_factory, "quickdraw_data") as (folder, build):
    if build:
      synthetic.write_category_files(str(folder), CATEGORIES, ROWS)
  return str(folder)


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory):
  """One quickdraw-train run of configs/smoke.flags as users run it (its
  MobileNet), exported (no app folder), shared by every worker: read it,
  or `copy_of` it to change it."""
  from absl.testing import flagsaver
  from quickdraw.cli import train as train_cli
  with built_once(tmp_path_factory, "trained_run") as (folder, build):
    if build:
      with flagsaver.flagsaver():
        flags.FLAGS(["train"] + smoke_args(data_dir, folder, folder / "run"))
        train_cli.main(["train"])
  return folder / "run"


@pytest.fixture
def make_source(data_dir):
  def make(**overrides):
    values = dict(categories=CATEGORIES, data_dir=data_dir, download=False,
                  samples_per_class=200)
    values.update(overrides)
    return QuickDrawSource.open(DataConfig(**values))
  return make


STAND_IN_SIZE = 32


@pytest.fixture(scope="session")
def stand_in(data_dir):
  """(classifier, source): a small CNN that knows the generated classes.

  A random-weight MobileNet cannot tell generated shapes apart without
  fine-tuning, so export tests use this CNN with the same contract
  ([batch, 32, 32, 3] in [-1, 1] -> softmax), trained in seconds.
  """
  import keras
  from quickdraw import input_pipeline, preprocessing
  from quickdraw.splits import Split
  source = QuickDrawSource.open(DataConfig(
      categories=CATEGORIES, data_dir=data_dir, download=False,
      samples_per_class=300, image_size=STAND_IN_SIZE))
  keras.utils.set_random_seed(0)
  classifier = keras.Sequential([
      keras.Input((STAND_IN_SIZE, STAND_IN_SIZE, 3), name="input"),
      keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
      keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(len(CATEGORIES), activation="softmax",
                         name="final_result"),
  ])
  classifier.compile(optimizer=keras.optimizers.Adam(3e-3),
                     loss="sparse_categorical_crossentropy")
  classifier.fit(input_pipeline.make_dataset(
      source, Split.TRAIN, 32, image_size=STAND_IN_SIZE, epochs=8,
      value_range=preprocessing.SIGNED_RANGE),
      verbose=0, shuffle=False)
  return classifier, source


def export_stand_in(stand_in, folder, drawings: int = 100, **overrides):
  """Exports the stand-in CNN into `folder` (assets in `folder/assets`),
  checked on `drawings` test drawings; int8 calibrates on training and
  chooses on validation drawings. Returns the ExportConfig."""
  from quickdraw import export
  from quickdraw.splits import Split
  classifier, source = stand_in
  values = dict(output_graph=str(folder / "retrained_graph.pb"),
                output_labels=str(folder / "retrained_labels.txt"),
                output_tflite=str(folder / "model.tflite"),
                report_dir=str(folder),
                android_assets_dir=str(folder / "assets"))
  values.update(overrides)
  config = export.ExportConfig(**values)
  export_flow.export_model(
      classifier, source.categories, config,
      *data_source.drawings_from_split(source, Split.TEST, drawings),
      data_source.drawings_from_split(source, Split.TRAIN, drawings)[0],
      data_source.drawings_from_split(source, Split.VALIDATION, drawings))
  return config


def serve_in_background(httpd) -> None:
  """Runs an HTTP server on a daemon thread, polled every 50 ms: a test's
  shutdown() waits for the next poll (serve_forever's default, 0.5 s)."""
  threading.Thread(target=httpd.serve_forever, daemon=True,
                   kwargs={"poll_interval": 0.05}).start()


def run_command(name: str, *args: str) -> tuple[int, str]:
  """quickdraw-<name> as its console script runs it (the command's flag
  parsing, then its guarded main), in this process: (exit status, what it
  printed on stderr). For one-line errors, which need no fresh process;
  tests of start-up output spawn one."""
  from absl import logging as absl_logging
  from absl.testing import flagsaver
  from quickdraw.cli import common
  command = importlib.import_module(f"quickdraw.cli.{name}")
  handler = absl_logging.get_absl_handler()
  formatter = handler.formatter
  stderr = io.StringIO()
  with flagsaver.flagsaver(), mock.patch.object(
      sys, "argv", [f"{name}.py", *args]), mock.patch.object(
          sys, "stderr", stderr):
    flags.FLAGS.unparse_flags()
    try:
      common.guarded(command.main)(common.parse_flags(sys.argv))
      status = 0
    except SystemExit as e:
      status = e.code
    finally:
      handler.setFormatter(formatter)  # guarded() set its own
      flags.FLAGS.mark_as_parsed()
  return status, stderr.getvalue()


# How pytest-xdist splits the suite into work units (setup.cfg runs two
# workers): the tests of a module with module-scoped fixtures stay together
# (test_families: per backbone family, its `run` fixture's parameter), so
# each fixture is built once; every other test is a unit of its own, so that
# no file's tests queue behind each other on one worker. (xdist's own
# --dist loadgroup would do this with marks, but pytest 9.2's structured
# node ids silently defeat it: pytest-xdist issue 1386.)
MODULE_UNITS = ("test_android.py", "test_bottlenecks.py", "test_demo.py",
                "test_download.py", "test_export.py",
                "test_input_pipeline.py", "test_others.py",
                "test_remote_rows.py")
FAMILY_UNITS = ("efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small")
# Seconds the slowest units took (2-core VM, two workers), by a substring
# of their unit: they start first, longest first, which keeps the workers'
# loads even (one slow unit started last would run alone at the end). Only
# the order depends on these figures.
SLOW_FIRST = {
    "test_real_data.py::test_quickstart": 40, "test_quality.py::": 40,
    "test_export.py": 60, ":efficientnet_b0": 40,
    "test_distribute.py::test_multi_worker": 30, "test_demo.py": 35,
    "test_distribute.py::test_mirrored": 25, "[mobilenet_v3_large]": 10,
    "test_android.py": 20,
    ":mobilenet_v2": 20, ":mobilenet_v3_small": 20,
    "test_faults.py::test_two_runs": 15,
    "test_real_data.py::test_the_seeds": 15,
    "test_image_folders.py::test_the_seeds": 12,
    "test_distribute.py::test_mixed_precision": 10,
    "test_user_errors.py::test_commands_start_quietly": 9,
    "test_user_errors.py::test_progress": 7,
    "test_paths.py::test_every_path_flag": 7,
    # Then the tests of a few seconds each, before the many short ones: a
    # run that ends on short tests ends with both workers busy.
    "test_training.py::": 5, "test_scripts.py::test_bench": 5,
    "test_faults.py::": 4, "test_others.py::": 4,
    "test_litert_features.py::": 3, "test_paths.py::": 3,
}


def work_unit(nodeid: str) -> str:
  """The xdist work unit of a test, from its node id alone (the controller
  sees nothing else)."""
  module, _, rest = nodeid.partition("::")
  name = os.path.basename(module)
  if name in MODULE_UNITS:
    return module
  if name == "test_families.py" and rest.endswith("]"):
    family = rest[rest.index("[") + 1:-1].split("-")[0]
    if family in FAMILY_UNITS:
      return f"{module}:{family}"
  return nodeid


def _cost(nodeid: str) -> float:
  unit = work_unit(nodeid)
  return max((s for key, s in SLOW_FIRST.items() if key in unit), default=0)


def pytest_collection_modifyitems(config, items):
  # Stable: units keep their file order after the slow ones.
  items.sort(key=lambda item: -_cost(item.nodeid))


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling

  class ByWorkUnit(LoadScopeScheduling):
    """LoadScope with `work_unit` as the scope, in collection order."""

    def _split_scope(self, nodeid):
      return work_unit(nodeid)

  return ByWorkUnit(config, log)
