"""Training end to end on generated data with a random 32 px backbone."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from quickdraw import bottlenecks, preprocessing, training
from quickdraw.cli import train as train_cli
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError
from quickdraw.export import contracts
from quickdraw import schedules

from conftest import CATEGORIES

SIZE = 32


def data_config(data_dir, **overrides):
  values = dict(categories=CATEGORIES, data_dir=data_dir, download=False,
                samples_per_class=100, image_size=SIZE)
  values.update(overrides)
  return DataConfig(**values)


def train_config(tmp_path, name="run", **overrides):
  values = dict(architecture="test_tiny_32", weights="none", epochs=2,
                train_batch_size=32, bottleneck_dir=str(tmp_path / "cache"),
                output_dir=str(tmp_path / name), verbose=0)
  values.update(overrides)
  return training.TrainConfig(**values)


class Interrupt(keras.callbacks.Callback):
  """Stops training like Ctrl-C at the end of epoch `after` (1-based).

  With `model_name`, only while that model trains ("head" trains from the
  cache, "quickdraw_classifier" while fine-tuning, or
  "quickdraw_mixing_trainer" with --fine_tune_mixes).
  """

  def __init__(self, after, model_name=None):
    super().__init__()
    self.after = after
    self.model_name = model_name

  def on_epoch_end(self, epoch, logs=None):
    if epoch + 1 == self.after and self.model_name in (None, self.model.name):
      raise KeyboardInterrupt


def test_main_writes_model_labels_and_report(trained_run):
  """quickdraw-train's files (the shared run: configs/smoke.flags,
  exported)."""
  out = trained_run
  size = 64  # the smoke config's --image_size
  labels = (out / "retrained_labels.txt").read_text().splitlines()
  assert labels == list(CATEGORIES)
  classifier = keras.models.load_model(out / "model.keras")
  assert classifier.input_shape == (None, size, size, 3)
  assert classifier.output_shape == (None, len(CATEGORIES))
  assert classifier.get_layer("head").get_layer("final_result")
  # A fresh process that imports only inference loads it: the file names
  # quickdraw's label-smoothing loss, which the predictor registers.
  from conftest import REPO
  loaded = subprocess.run(
      [sys.executable, "-c", "import sys; from quickdraw import inference; "
       "print(inference.KerasPredictor(sys.argv[1]).image_size)",
       str(out / "model.keras")], env=dict(os.environ, PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=300)
  assert loaded.stdout.split()[-1:] == [str(size)], loaded.stderr[-500:]

  report = json.loads((out / "evaluation.json").read_text())
  assert set(report) == {"drawings", "top1", "top3", "per_class"}
  assert [c["category"] for c in report["per_class"]] == list(CATEGORIES)
  assert report["drawings"] == sum(c["drawings"] for c in report["per_class"])
  assert 0 <= report["top1"] <= report["top3"] <= 1
  matrix = json.loads((out / "confusion_matrix.json").read_text())["matrix"]
  assert np.array(matrix).shape == (4, 4)
  assert np.array(matrix).sum() == report["drawings"]
  for png in ("confusion_matrix", "misclassified", "training_inputs"):
    assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Exported at the end: frozen graph and TFLite, checked against Keras.
  export_report = json.loads((out / "export_report.json").read_text())
  for artifact in ("frozen_graph", "tflite_float32"):
    assert export_report["artifacts"][artifact]["top1_agreement"] == 1.0
  assert (out / "retrained_graph.pb").exists()
  assert (out / "model.tflite").exists()
  run = json.loads((out / "run.json").read_text())
  assert run["train"]["architecture"] == "mobilenet_0.25_128"
  assert not (out / "checkpoints").exists()  # removed once complete
  events = {os.path.relpath(root, out / "logs")
            for root, _, files in os.walk(out / "logs")
            if any(f.startswith("events.out.tfevents") for f in files)}
  assert {"head/train", "head/validation", "fine_tune/train",
          "images"} <= events


def test_a_retrain_writes_the_recorded_app_folder_again(data_dir, tmp_path,
                                                        capsys):
  out, assets = tmp_path / "out", tmp_path / "app" / "assets"
  settings = dict(
      data_dir=data_dir, download=False, samples_per_class=60,
      architecture="test_tiny_32", image_size=SIZE, weights="none",
      epochs=1, train_batch_size=32, bottleneck_dir=str(tmp_path / "cache"),
      output_dir=str(out), check_drawings=20, check_canvases=8,
      canvas_size=64)
  with flagsaver.flagsaver(categories=list(CATEGORIES[:3]),
                           android_assets_dir=str(assets), **settings):
    train_cli.main(["train"])
  capsys.readouterr()
  with flagsaver.flagsaver(categories=list(CATEGORIES), **settings):
    train_cli.main(["train"])
  said = capsys.readouterr().out
  assert f"The app's files go to {assets} again" in said
  # The threshold the Kotlin code needs, said at the end.
  threshold = contracts.score_threshold_for(str(out / "model.tflite"))
  last = said.rstrip().splitlines()[-1]
  assert last.startswith(f"The app's score threshold (in the model's "
                         f"metadata): {threshold:.3f}; above it ")
  # The app's folder holds the new four-class model, and the run keeps it.
  assert (assets / "labels.txt").read_text().split() == list(CATEGORIES)
  run = json.loads((out / "run.json").read_text())
  assert run["export"]["android_assets_dir"] == str(assets)


def test_second_run_trains_from_the_cache(data_dir, tmp_path, monkeypatch):
  first = training.train_and_evaluate(data_config(data_dir),
                                      train_config(tmp_path, "a"))
  assert sorted(first.bottlenecks_computed) == ["test", "train", "validation"]

  def no_forward_passes(backbone, image_size):
    raise AssertionError("the backbone ran although the cache was full")

  monkeypatch.setattr(bottlenecks, "compiled_forward", no_forward_passes)
  second = training.train_and_evaluate(data_config(data_dir),
                                       train_config(tmp_path, "b"))
  assert second.bottlenecks_computed == []
  assert second.report["top1"] == pytest.approx(first.report["top1"])


def test_interrupted_run_resumes_where_it_stopped(data_dir, tmp_path):
  data = data_config(data_dir)
  # At the default dropout: with the same data order and the dropout
  # layer's random state restored, the resumed run must end with the very
  # weights of an uninterrupted one.
  config = train_config(tmp_path, "resumed", epochs=4)
  assert config.dropout == 0.2
  with pytest.raises(KeyboardInterrupt):
    training.train_and_evaluate(data, config, callbacks=[Interrupt(after=2)])
  assert not os.path.exists(os.path.join(config.output_dir, "model.keras"))
  state = json.loads(open(os.path.join(config.output_dir, "checkpoints",
                                       "state.json")).read())
  assert (state["phase"], state["epoch"]) == ("head", 2)

  resumed = training.train_and_evaluate(data, config)
  assert resumed.epochs_run == {"head": 2}
  straight = training.train_and_evaluate(
      data, train_config(tmp_path, "straight", epochs=4))
  assert straight.epochs_run == {"head": 4}
  for a, b in zip(resumed.classifier.get_layer("head").weights,
                  straight.classifier.get_layer("head").weights):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                               keras.ops.convert_to_numpy(b), atol=1e-6)


def test_changed_settings_start_over(data_dir, tmp_path):
  data = data_config(data_dir)
  config = train_config(tmp_path, "run", epochs=3)
  with pytest.raises(KeyboardInterrupt):
    training.train_and_evaluate(data, config, callbacks=[Interrupt(after=1)])
  changed = train_config(tmp_path, "run", epochs=3, learning_rate=0.01)
  assert training.train_and_evaluate(data, changed).epochs_run == {"head": 3}


def test_fine_tuning_changes_top_layers_only(data_dir, tmp_path):
  result = training.train_and_evaluate(
      data_config(data_dir),
      train_config(tmp_path, epochs=1, fine_tune_layers=4, fine_tune_epochs=1,
                   fine_tune_learning_rate=0.01))
  assert result.epochs_run == {"head": 1, "fine_tune": 1}
  backbone = result.classifier.get_layer(index=1)
  trained = [l.name for l in backbone.layers if l.trainable and l.weights]
  assert trained and all("bn" not in name for name in trained)
  # The test split went through the fine-tuned backbone, not the cache.
  assert "test" not in result.bottlenecks_computed


@pytest.mark.parametrize("upsample, mixes, model_name", [
    ("host", False, "quickdraw_classifier"),
    ("device", False, "quickdraw_device_classifier"),
    ("host", True, "quickdraw_mixing_trainer"),
    ("device", True, "quickdraw_mixing_trainer")])
def test_fine_tune_resumes_in_its_phase(data_dir, tmp_path, upsample,
                                        mixes, model_name):
  data = data_config(data_dir)
  config = train_config(tmp_path, epochs=1, fine_tune_layers=2,
                        fine_tune_epochs=2, upsample=upsample,
                        fine_tune_mixes=mixes)
  with pytest.raises(KeyboardInterrupt):
    training.train_and_evaluate(
        data, config, callbacks=[Interrupt(after=1, model_name=model_name)])
  resumed = training.train_and_evaluate(data, config)
  assert resumed.epochs_run == {"head": 0, "fine_tune": 1}


def test_pictures_mix_on_one_replica_alone():
  """Over several replicas each takes a slice of a batch, and a mix's two
  rows may be in two slices: the backbone's phases mix on one alone."""
  import types
  from quickdraw import added_rows
  no_others = types.SimpleNamespace(exposure=np.zeros((0, 784), np.uint8))

  def added(replicas, **kwargs):
    config = training.TrainConfig(train_batch_size=64, mix_share=0.2,
                                  **kwargs)
    return added_rows.AddedRows(None, DataConfig(), config, no_others,
                                replicas)

  one, two = added(1, fine_tune_mixes=True), added(2, fine_tune_mixes=True)
  assert one.picture_mixes == one.feature_mixes == 13
  assert two.picture_mixes == 0 and two.feature_mixes == 12  # even
  assert one.per_batch["others"] == 0  # no other categories at hand
  # Off by default: the head's batches from the cache mix, no others.
  assert added(1).picture_mixes == 0 and added(1).feature_mixes == 13


def test_augmentation_bypasses_the_cache(data_dir, tmp_path):
  config = train_config(tmp_path, epochs=1, augment=True)
  result = training.train_and_evaluate(data_config(data_dir), config)
  # Only the test split (the backbone is unchanged) used the cache.
  assert result.bottlenecks_computed == ["test"]
  assert result.epochs_run == {"head": 1}


def test_fine_tune_augment_keeps_the_head_on_the_cache(data_dir, tmp_path,
                                                       monkeypatch):
  from quickdraw import input_pipeline
  made = []
  make_dataset = input_pipeline.make_dataset

  def recording(*args, **kwargs):
    made.append(kwargs.get("augment", False))
    return make_dataset(*args, **kwargs)

  monkeypatch.setattr(input_pipeline, "make_dataset", recording)
  config = train_config(tmp_path, epochs=1, fine_tune_layers=2,
                        fine_tune_epochs=1, fine_tune_augment=True)
  result = training.train_and_evaluate(data_config(data_dir), config)
  assert "train" in result.bottlenecks_computed  # the head's cache
  assert result.epochs_run == {"head": 1, "fine_tune": 1}
  assert made.count(True) == 1  # the fine-tuning drawings, nothing else


def test_accuracy_gate_exports_nothing(data_dir, tmp_path):
  config = train_config(tmp_path, epochs=1, min_accuracy=1.0)
  with pytest.raises(QuickDrawError) as e:
    training.train_and_evaluate(data_config(data_dir), config)
  assert "is below --min_accuracy=1.0; nothing exported" in str(e.value)
  out = config.output_dir
  assert os.path.exists(os.path.join(out, "evaluation.json"))
  assert not os.path.exists(os.path.join(out, "model.keras"))
  assert not os.path.exists(os.path.join(out, "retrained_labels.txt"))


def test_how_many_training_steps_rounds_up_to_epochs(tmp_path):
  config = train_config(tmp_path, how_many_training_steps=7000,
                        train_batch_size=100)
  # 8,000 training drawings: 80 batches an epoch; 7,000 steps -> 88 epochs.
  assert schedules.head_schedule(8000, config) == (88, 80)
  assert schedules.head_schedule(8000, train_config(tmp_path, epochs=5)) == (
      5, 250)


def test_head_schedules(tmp_path):
  def rates(schedule):
    rate = schedules.head_learning_rate(
        train_config(tmp_path, head_schedule=schedule, learning_rate=0.01),
        300)
    return [float(rate(step)) if callable(rate) else rate
            for step in (0, 100, 199, 250, 299)]
  assert rates("constant") == [0.01] * 5
  cosine = rates("cosine")
  assert cosine[0] == pytest.approx(0.01) and cosine[1] < 0.008
  # Held for two thirds of the steps, then halfway down at five sixths.
  held = rates("hold_cosine")
  assert held[:3] == pytest.approx([0.01] * 3)
  assert held[3] == pytest.approx(0.005, abs=1e-4) and held[4] < 1e-5


def test_train_seed_moves_training_not_the_split(data_dir, tmp_path):
  data = data_config(data_dir, seed=3)
  assert train_config(tmp_path).seed_for(data) == 3
  assert train_config(tmp_path, train_seed=0).seed_for(data) == 0
  runs = [training.train_and_evaluate(
      data, train_config(tmp_path, name=f"seed{seed}", train_seed=seed,
                         epochs=1)) for seed in (0, 1)]
  # The same test drawings, other weights.
  assert runs[0].report["drawings"] == runs[1].report["drawings"]
  assert not np.array_equal(runs[0].classifier.get_weights()[-1],
                            runs[1].classifier.get_weights()[-1])


@pytest.mark.parametrize("overrides, message", [
    (dict(head_schedule="linear"), "--head_schedule=linear; use constant"),
    (dict(min_accuracy=1.5), "--min_accuracy=1.5 is outside [0, 1]"),
    (dict(architecture="mobilenet_3.0_224"),
     "--architecture=mobilenet_3.0_224 is not a backbone quickdraw offers"),
    (dict(epochs=0), "--epochs=0 trains nothing"),
    (dict(learning_rate=0.0), "--learning_rate=0.0; pass a positive rate"),
    (dict(label_smoothing=1.0), "--label_smoothing=1.0 is outside [0, 1)"),
])
def test_bad_settings(tmp_path, overrides, message):
  with pytest.raises(QuickDrawError) as e:
    train_config(tmp_path, **overrides)
  assert message in str(e.value)


def test_flags_take_their_defaults_from_the_config():
  defaults = training.TrainConfig()
  for name in ("architecture", "weights", "epochs", "train_batch_size",
               "learning_rate", "fine_tune_layers", "augment", "min_accuracy",
               "how_many_training_steps", "bottleneck_dir", "output_dir"):
    # As written in the config (a path flag expands `~` when parsed).
    assert flags.FLAGS[name].default_unparsed == getattr(defaults, name), name


def test_retrain_py_command_is_accepted(data_dir, tmp_path):
  """The seed's retrain.py flags, --image_dir swapped for --data_dir."""
  argv = ["train", f"--data_dir={data_dir}", "--categories=circle,square",
          "--nodownload", "--architecture=test_tiny_32",
          f"--bottleneck_dir={tmp_path}/bottlenecks",
          "--how_many_training_steps=3", f"--model_dir={tmp_path}/models",
          f"--summaries_dir={tmp_path}/summaries",
          f"--output_graph={tmp_path}/retrained_graph.pb",
          f"--output_labels={tmp_path}/retrained_labels.txt",
          "--weights=none", "--image_size=32", "--samples_per_class=60",
          f"--output_dir={tmp_path}/out"]
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    train_cli.main(["train"])
  assert (tmp_path / "retrained_labels.txt").read_text() == "circle\nsquare\n"
  assert (tmp_path / "summaries" / "head").is_dir()


@pytest.mark.parametrize("flag", ["output_dir", "summaries_dir"])
def test_unwritable_folder_is_one_line(data_dir, tmp_path, flag):
  blocker = tmp_path / "file"
  blocker.write_text("")
  config = train_config(tmp_path, **{flag: str(blocker / "sub")})
  with pytest.raises(QuickDrawError) as e:
    training.train_and_evaluate(data_config(data_dir), config)
  assert str(e.value) == (f"cannot write to --{flag} {blocker}/sub: "
                          f"{blocker} is a file, not a folder; pass a "
                          "writable folder")
  assert os.listdir(tmp_path) == ["file"]  # nothing else was written


def test_upsampling_on_the_device(data_dir, tmp_path):
  """Fine-tuning and augmentation with 28x28 drawings fed to the model."""
  assert not training.upsample_on_device("auto")  # no GPU here
  assert training.upsample_on_device("device")
  config = train_config(tmp_path, epochs=1, augment=True, fine_tune_layers=2,
                        fine_tune_epochs=1, upsample="device")
  result = training.train_and_evaluate(data_config(data_dir), config)
  assert result.epochs_run == {"head": 1, "fine_tune": 1}
  # What is saved and exported keeps the documented RGB input.
  assert result.classifier.input_shape == (None, SIZE, SIZE, 3)
  saved = keras.models.load_model(os.path.join(config.output_dir,
                                               "model.keras"))
  assert saved.input_shape == (None, SIZE, SIZE, 3)


def test_device_and_host_upsampling_agree(data_dir, tmp_path):
  from quickdraw import input_pipeline, model
  source = training.QuickDrawSource.open(data_config(data_dir))
  backbone = model.build_backbone(model.Architecture(0.25, SIZE), None)
  classifier = model.build_classifier(backbone, model.build_head(256, 4))
  device = model.build_device_classifier(classifier)
  drawings = next(iter(input_pipeline.make_dataset(source, "test", 16,
                                                   shuffle=False,
                                                   value_range=None)))[0]
  images = next(iter(input_pipeline.make_dataset(
      source, "test", 16, image_size=SIZE, shuffle=False,
      value_range=preprocessing.SIGNED_RANGE)))[0]
  np.testing.assert_allclose(device.predict(drawings, verbose=0),
                             classifier.predict(images, verbose=0), atol=1e-6)


def test_head_steps_are_bundled_within_an_epoch():
  assert schedules.steps_per_execution(80) == 20
  assert schedules.steps_per_execution(64) == 32
  assert schedules.steps_per_execution(7) == 7
  assert schedules.steps_per_execution(79) == 1  # prime: no bundle divides it
  assert schedules.steps_per_execution(1) == 1
