"""Faults a user's machine meets: a full disk, a damaged cache or
checkpoint, two runs on one cache, a kill during the export's renames."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from quickdraw import atomic_files, checkpoints, download, jpeg_dump
from quickdraw.categories import Category
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.export import flow as export_flow
from quickdraw.export import config as export_config

from conftest import CATEGORIES, REPO, copy_of, export_stand_in

TINY = ["--architecture=test_tiny_32", "--weights=none",
        "--samples_per_class=60", "--image_size=32", "--epochs=2",
        "--train_batch_size=32", "--nodownload"]


@pytest.fixture
def small_disk(tmp_path):
  """A real, small filesystem (tmpfs), made by the test and removed after;
  where mounting is not permitted, the test is skipped."""
  mounted = []

  def mount(kilobytes: int) -> str:
    folder = tmp_path / f"small{len(mounted)}"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o",
                           f"size={kilobytes}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
      pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}"
                  "); the patched full-disk tests still run")
    mounted.append(folder)
    return str(folder)

  yield mount
  for folder in mounted:
    subprocess.run(["umount", str(folder)], capture_output=True)


def _one_line_disk_full(e, folder):
  message = str(e.value)
  assert message.startswith(f"no space left in {folder}"), message
  assert "MB needed" in message and "\n" not in message


def _no_temporaries(folder):
  for root, _, files in os.walk(folder):
    for name in files:
      assert not name.startswith("."), os.path.join(root, name)


def test_a_full_disk_during_the_jpeg_dump(data_dir, small_disk):
  folder = small_disk(64)
  source = QuickDrawSource.open(DataConfig(
      categories=CATEGORIES, data_dir=data_dir, download=False,
      samples_per_class=300))
  config = jpeg_dump.DumpConfig(output_dir=folder, size=64,
                                image_format="png")
  with pytest.raises(QuickDrawError) as e:
    jpeg_dump.dump(source, config, verbose=0)
  _one_line_disk_full(e, folder)
  _no_temporaries(folder)
  kept = sum(len(files) for _, _, files in os.walk(folder))
  assert kept > 0
  # Room again: the rerun keeps what was complete and writes the rest.
  again = str(os.path.join(os.path.dirname(folder), "roomy"))
  os.makedirs(again)
  subprocess.run(["cp", "-r", f"{folder}/.", again], check=True)
  results = jpeg_dump.dump(source, jpeg_dump.DumpConfig(
      output_dir=again, size=64, image_format="png"), verbose=0)
  assert sum(s for _, s in results.values()) == kept


def test_a_full_disk_during_a_download(data_dir, small_disk):
  path = os.path.join(data_dir, "circle.npy")
  data = open(path, "rb").read()
  record = Category("circle", "unused", len(data),
                    hashlib.sha256(data).hexdigest())
  folder = small_disk(16)
  with pytest.raises(QuickDrawError) as e:
    download.download_category(record, folder, f"file://{data_dir}")
  _one_line_disk_full(e, folder)
  assert "--samples_per_class" in str(e.value)
  assert os.listdir(folder) == []


def test_a_full_disk_during_bottlenecks(make_source, small_disk):
  from test_bottlenecks import _backbone
  folder = small_disk(16)
  with pytest.raises(QuickDrawError) as e:
    from quickdraw import bottlenecks
    bottlenecks.load_or_compute(_backbone(), make_source(), "train", 32,
                                folder, verbose=0)
  _one_line_disk_full(e, folder)
  assert not any("features" in n for _, _, files in os.walk(folder)
                 for n in files)


def test_a_full_disk_during_the_export_replaces_nothing(stand_in, tmp_path,
                                                        small_disk):
  first = export_stand_in(stand_in, tmp_path, drawings=20)
  before = {n: (tmp_path / n).read_bytes() for n in
            ("model.tflite", "export_report.json")}
  folder = small_disk(64)
  with pytest.raises(QuickDrawError) as e:
    export_stand_in(stand_in, tmp_path, drawings=20,
                    output_tflite=os.path.join(folder, "model.tflite"))
  _one_line_disk_full(e, tmp_path)
  assert os.listdir(folder) == []
  for name, data in before.items():
    assert (tmp_path / name).read_bytes() == data
  assert first.output_tflite == str(tmp_path / "model.tflite")


def test_a_full_disk_during_a_checkpoint(tmp_path, monkeypatch):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

  def full(self, path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(keras.Model, "save_weights", full)
  saver = checkpoints.Checkpoints(str(tmp_path / "ckpt"), "f")
  with pytest.raises(QuickDrawError) as e:
    saver.save("head", 1, model)
  _one_line_disk_full(e, tmp_path / "ckpt")
  assert os.listdir(tmp_path / "ckpt") == []
  assert saver.latest() is None


def test_a_damaged_checkpoint_starts_over_in_one_line(tmp_path, caplog):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile("adam", "mse")
  saver = checkpoints.Checkpoints(str(tmp_path), "f")
  saver.save("head", 3, model)
  state = saver.latest()
  assert state["epoch"] == 3
  weights = tmp_path / state["dir"] / "model.weights.h5"
  with open(weights, "r+b") as f:
    f.truncate(weights.stat().st_size // 2)
  assert saver.latest() is None
  warnings = [r.getMessage() for r in caplog.records
              if "is damaged" in r.getMessage()]
  assert len(warnings) == 1 and "starting over" in warnings[0]


def _command(*args, env=None, **kwargs):
  environment = dict(os.environ, PYTHONPATH=REPO)
  environment.update(env or {})
  return subprocess.Popen([sys.executable, "-m", *args], env=environment,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kwargs)


def test_two_runs_share_one_empty_bottleneck_cache(data_dir, tmp_path):
  cache = tmp_path / "shared_cache"

  def train(name, bottleneck_dir):
    return _command("quickdraw.cli.train", f"--data_dir={data_dir}",
                    f"--categories={','.join(CATEGORIES)}", *TINY,
                    "--noexport", f"--bottleneck_dir={bottleneck_dir}",
                    f"--output_dir={tmp_path / name}")

  runs = [train("a", cache), train("b", cache)]
  outputs = [run.communicate(timeout=600) for run in runs]
  for run, (out, err) in zip(runs, outputs):
    assert run.returncode == 0, err
    assert "Traceback" not in err
  from quickdraw.cli import train as train_cli
  from absl import flags
  from absl.testing import flagsaver
  with flagsaver.flagsaver():  # the same command, alone, in this process
    flags.FLAGS(["train", f"--data_dir={data_dir}",
                 f"--categories={','.join(CATEGORIES)}", *TINY, "--noexport",
                 f"--bottleneck_dir={tmp_path / 'own_cache'}",
                 f"--output_dir={tmp_path / 'alone'}"])
    train_cli.main(["train"])
  top1 = [json.loads((tmp_path / n / "run.json").read_text())["test"]["top1"]
          for n in ("a", "b", "alone")]
  assert top1[0] == top1[1] == top1[2]
  features = sorted(cache.glob("*/features.npy"))
  assert len(features) == 3  # one entry per split, shared


def test_a_kill_between_the_exports_renames(trained_run, tmp_path):
  out = copy_of(trained_run, tmp_path)  # trained and exported once
  args = ["quickdraw.cli.export", f"--output_dir={out}",
          "--check_drawings=20", "--check_canvases=10", "--canvas_size=64"]
  journal = out / export_config.JOURNAL
  # Again, pausing 3 s after each rename: killed after the first.
  second = _command(*args, "--quantize=dynamic",
                    env={atomic_files.PAUSE_ENV: "3"})
  deadline = time.time() + 600
  while not journal.exists() and time.time() < deadline:
    time.sleep(0.05)
  assert journal.exists(), second.communicate()
  time.sleep(1)
  second.send_signal(signal.SIGKILL)
  second.wait()
  pairs = json.loads(journal.read_text())
  waiting = {path: hashlib.sha256(open(tmp, "rb").read()).hexdigest()
             for path, tmp in pairs if os.path.exists(tmp)}
  assert 0 < len(waiting) < len(pairs)  # killed half-way: a mix on disk

  # The next export (or train) finishes it and says so.
  finished = export_flow.finish_interrupted_export(str(out))
  assert finished == len(waiting)
  assert not journal.exists()
  for path, digest in waiting.items():
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest
  # Every artifact is from the killed export: its report's sizes match.
  report = json.loads((out / "export_report.json").read_text())
  assert "tflite_dynamic" in report["artifacts"]
  for artifact in report["artifacts"].values():
    assert os.path.getsize(artifact["path"]) == artifact["bytes"]
  assert export_flow.finish_interrupted_export(str(out)) == 0  # nothing left


def test_a_transaction_removes_files_all_or_none(tmp_path, monkeypatch):
  from quickdraw import atomic_files
  new, old = tmp_path / "new.txt", tmp_path / "old.txt"
  old.write_text("an earlier export's")
  with atomic_files.staged([str(new)], removed=[str(old),
                                                str(tmp_path / "none")]) as t:
    with open(t[str(new)], "w") as f:
      f.write("this export's")
  assert new.read_text() == "this export's" and not old.exists()

  # A rename that fails puts the removed file back.
  old.write_text("an earlier export's")
  real = os.replace

  def failing(src, dst):
    if str(dst).endswith("late.txt"):
      raise OSError(28, "No space left on device")
    return real(src, dst)

  monkeypatch.setattr(atomic_files.os, "replace", failing)
  with pytest.raises(QuickDrawError):
    with atomic_files.staged([str(new), str(tmp_path / "late.txt")],
                             removed=[str(old)]) as t:
      for path in t.values():
        with open(path, "w") as f:
          f.write("x")
  assert old.read_text() == "an earlier export's"
  monkeypatch.setattr(atomic_files.os, "replace", real)

  # A journal from a killed transaction finishes its removals too.
  journal = tmp_path / "journal"
  journal.write_text(json.dumps([[str(old), None]]))
  assert atomic_files.finish_interrupted(str(journal)) == 1
  assert not old.exists() and not journal.exists()
