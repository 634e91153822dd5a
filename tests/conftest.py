"""Shared fixtures: small generated data, and absl flags ready for main([])."""

import os

# As the entry points do (quickdraw/cli/__init__.py), before TensorFlow
# loads: its oneDNN kernels, which it turns on by itself only on AVX-512
# CPUs, make MobileNets several times faster on AVX2 machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

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


def smoke_args(data_dir, tmp_path, output_dir) -> list[str]:
  """configs/smoke.flags as arguments, on the tests' data and folders.

  Tests run the very configuration users run, so a change to it is tested.
  """
  return [f"--flagfile={SMOKE_FLAGS}", f"--data_dir={data_dir}",
          f"--bottleneck_dir={tmp_path / 'smoke_cache'}",
          f"--output_dir={output_dir}"]


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
  """A folder of generated official-format files, one per CATEGORIES."""
  path = str(tmp_path_factory.mktemp("quickdraw_data"))
  synthetic.write_category_files(path, CATEGORIES, ROWS)
  return path


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
