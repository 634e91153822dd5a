"""Every path flag of every command expands `~` and environment variables
where it is parsed (a folder literally named `~` is one `rm -rf ~` away
from a lost home)."""

import json
import os
import subprocess
import sys

from conftest import REPO

# The command modules; demo's --model and predict's cannot share a process.
GROUPS = (("prepare", "train", "export", "predict", "dump_jpeg"), ("demo",))
# Flags that name a file or folder, in every command that has them.
EXPECTED = {"categories_file", "data_dir", "output_dir", "output_labels",
            "output_graph", "output_tflite", "android_assets_dir", "model",
            "labels", "save_drawings", "weights", "model_dir",
            "bottleneck_dir", "summaries_dir", "image_dir", "collect_dir"}

_PROBE = """
import json, sys
from absl import flags
from quickdraw.cli import common
for name in sys.argv[1:]:
  __import__("quickdraw.cli." + name)
paths = {n: f for n, f in flags.FLAGS._flags().items()
         if isinstance(f.parser, common.PathParser)}
flags.FLAGS(["probe"] + [f"--{n}=~/q/$QD_PROBE/{n}" for n in paths])
print(json.dumps({
    "paths": {n: f.value for n, f in paths.items()},
    "strings": sorted(n for n, f in flags.FLAGS._flags().items()
                      if f.flag_type() == "string")}))
"""


def test_every_path_flag_expands_home_and_variables(tmp_path):
  env = dict(os.environ, HOME=str(tmp_path), QD_PROBE="probed")
  seen = set()
  for group in GROUPS:
    result = subprocess.run([sys.executable, "-c", _PROBE, *group],
                            capture_output=True, text=True, env=env,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name, value in found["paths"].items():
      assert value == os.path.join(str(tmp_path), "q", "probed", name)
    # No path-like flag was left a plain string.
    assert not EXPECTED & set(found["strings"]), found["strings"]
    seen |= set(found["paths"])
  assert seen == EXPECTED


def test_help_lists_flagfile_and_the_files_train_writes():
  result = subprocess.run(
      [sys.executable, "-m", "quickdraw.cli.train", "--help"],
      capture_output=True, text=True, cwd=REPO)
  # (absl's --help exits with status 1.)
  assert "--flagfile:" in result.stdout, result.stderr  # not only under --helpfull
  for written in ("model.keras", "run.json", "model_canvas.tflite",
                  "model_info.json", "<--android_assets_dir>/"):
    assert written in result.stdout, written


def test_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
  from quickdraw.cli import common
  import pytest
  from quickdraw.errors import QuickDrawError
  shipped = os.path.join(common.CONFIG_DIR, "quickstart.flags")
  assert os.path.exists(shipped)
  assert {"quickstart", "accurate", "retrain_compat", "smoke"} <= set(
      common.shipped_configs())
  monkeypatch.chdir(tmp_path)  # no configs/ here
  assert common.with_configs(
      ["train", "--config=quickstart", "--epochs=3"]) == [
          "train", f"--flagfile={shipped}", "--epochs=3"]
  assert common.with_configs(["train", "--config", "quickstart.flags"]) == [
      "train", f"--flagfile={shipped}"]
  assert common.with_configs(
      ["train", "--flagfile=configs/quickstart.flags"]) == [
          "train", f"--flagfile={shipped}"]
  # A flagfile of the user's own is left alone, even one named alike.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "quickstart.flags").write_text("--epochs=1\n")
  assert common.with_configs(
      ["train", "--flagfile=configs/quickstart.flags"]) == [
          "train", "--flagfile=configs/quickstart.flags"]
  with pytest.raises(QuickDrawError) as e:
    common.with_configs(["train", "--config=quikstart"])
  assert "no such config; use one of accurate, quickstart" in str(e.value)
