"""--strategy and --mixed_precision on this machine's CPU.

MirroredStrategy runs over two logical CPU devices, and
MultiWorkerMirroredStrategy over two worker processes on 127.0.0.1 that
find each other through TF_CONFIG. Both need a fresh process (devices and
the collective runtime are set up once per process), so they run
quickdraw-train in subprocesses, with the smoke config's settings on the
generated data and the test backbone (these tests are about what runs the
training; tests/test_export.py runs the smoke config as users do).
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from quickdraw import checkpoints, distribute, input_pipeline, training
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError

from conftest import CATEGORIES, REPO, SMOKE_MIN_TOP1, smoke_args

# Splits the CPU into N logical devices before TensorFlow starts, then runs
# quickdraw-train with the remaining arguments.
SPLIT_CPU_TRAIN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1]))
sys.argv = ["quickdraw-train"] + sys.argv[2:]
from quickdraw.cli import train
train.run()
"""


# Two thirds of the smoke config's drawings: it still learns the generated
# classes on the test backbone at top-1 0.978 to 1.000 over --seed=0..7.
SMALLER = ["--samples_per_class=200"]


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  env.update(extra)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _top1(out):
  with open(out / "evaluation.json") as f:
    return json.load(f)["top1"]


def test_mirrored_over_two_logical_cpus(data_dir, tmp_path):
  out = tmp_path / "run"
  done = subprocess.run(
      [sys.executable, "-c", SPLIT_CPU_TRAIN, "2", "--strategy=mirrored",
       *smoke_args(data_dir, tmp_path, out, tiny=True), *SMALLER],
      env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(out / "run.json") as f:
    assert json.load(f)["replicas"] == 2
  assert _top1(out) >= SMOKE_MIN_TOP1  # learns the shapes (chance: 0.25)
  # The export (checked against Keras inside the run) has plain variables.
  report = json.loads((out / "export_report.json").read_text())
  assert report["artifacts"]["tflite_float32"]["top1_agreement"] == 1.0


def test_multi_worker_with_two_local_workers(data_dir, tmp_path):
  out = tmp_path / "run"
  workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  procs = []
  for index in range(2):
    tf_config = json.dumps({"cluster": {"worker": workers},
                            "task": {"type": "worker", "index": index}})
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "quickdraw.cli.train",
         "--strategy=multi_worker",
         *smoke_args(data_dir, tmp_path, out, tiny=True), *SMALLER,
         # The export of a model trained over replicas is the mirrored
         # test's; here, the collective training and who writes what.
         "--noexport"],
        env=_env(TF_CONFIG=tf_config, TMPDIR=str(scratch)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    results.append((p.returncode, stdout, stderr))
  for rc, _, stderr in results:
    assert rc == 0, stderr[-3000:]
  chief, worker = results[0][1], results[1][1]
  assert "Wrote" in chief and "Worker done" in worker
  # Same weights everywhere: both processes measure the same accuracy.
  top1 = _top1(out)
  assert f"test top-1 {top1:.4f}" in chief
  assert f"test top-1 {top1:.4f}" in worker
  assert top1 >= SMOKE_MIN_TOP1
  with open(out / "run.json") as f:
    assert json.load(f)["replicas"] == 2
  assert (out / "model.keras").exists()
  # Only the chief wrote the run: no checkpoints left, worker scratch gone,
  # and the worker's bottleneck cache kept apart from the chief's.
  assert not (out / "checkpoints").exists()
  assert not [p for p in os.listdir(scratch) if p.startswith("quickdraw")]
  assert (tmp_path / "smoke_cache" / "worker-1").is_dir()


def test_mixed_precision_trains_and_saves_float32(data_dir, tmp_path):
  # Few drawings: float16 on a CPU is slow, and nothing here is about
  # accuracy.
  data = DataConfig(categories=CATEGORIES, data_dir=data_dir, download=False,
                    samples_per_class=40, image_size=32)
  config = training.TrainConfig(
      architecture="test_tiny_32", weights="none", epochs=2,
      fine_tune_layers=5, fine_tune_epochs=1, train_batch_size=32,
      mixed_precision=True, bottleneck_dir=str(tmp_path / "cache"),
      output_dir=str(tmp_path / "run"), verbose=0)
  result = training.train_and_evaluate(data, config)
  assert keras.mixed_precision.global_policy().name == "float32"  # restored
  saved = keras.models.load_model(tmp_path / "run" / "model.keras")
  for model in (result.classifier, saved):
    assert {l.dtype_policy.name for l in model.layers
            if hasattr(l, "dtype_policy")} == {"float32"}
  images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(
      np.float32)
  assert saved(images).dtype == tf.float32
  np.testing.assert_allclose(saved(images), result.classifier(images),
                             atol=1e-6)


def test_strategy_errors_are_one_line(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(QuickDrawError, match="needs TF_CONFIG"):
    distribute.make_strategy("multi_worker")
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(QuickDrawError, match="TF_CONFIG is not valid JSON"):
    distribute.make_strategy("multi_worker")
  with pytest.raises(QuickDrawError, match="no TPU found on this machine"):
    distribute.make_strategy("tpu")
  with pytest.raises(QuickDrawError, match="--strategy=spread; use one of"):
    training.TrainConfig(strategy="spread")

  class TwoReplicas:
    num_replicas_in_sync = 2

  with pytest.raises(QuickDrawError) as e:
    distribute.check_batch_size(33, TwoReplicas())
  assert str(e.value) == ("--train_batch_size=33 does not split over 2 "
                          "replicas; pass a multiple of 2, such as 34")


def test_default_strategy_is_the_chief():
  strategy = distribute.make_strategy("default")
  assert strategy.num_replicas_in_sync == 1
  assert distribute.is_chief(strategy)


def test_padded_batches_count_each_drawing_once():
  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(10, dtype=np.float32)[:, None], np.arange(10))).batch(4)
  batches = list(input_pipeline.pad_batches(ds, 3))
  sizes = [len(y) for _, y, _ in batches]
  assert sizes == [6, 6, 3]  # 4 -> 6, 4 -> 6, 2 -> 3
  weights = np.concatenate([w.numpy() for _, _, w in batches])
  labels = np.concatenate([y.numpy() for _, y, _ in batches])
  assert sorted(labels[weights == 1].tolist()) == list(range(10))
  x, y, _ = batches[-1]
  np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy())


def test_non_chief_reads_but_never_writes_checkpoints(tmp_path):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  chief = checkpoints.Checkpoints(str(tmp_path / "ck"), "fp")
  worker = checkpoints.Checkpoints(str(tmp_path / "ck"), "fp",
                                   writable=False)
  worker.save("head", 1, model)
  assert not (tmp_path / "ck").exists()
  chief.save("head", 2, model)
  assert worker.latest()["epoch"] == 2  # resumes where the chief saved
  worker.clear()
  assert chief.latest()["epoch"] == 2
