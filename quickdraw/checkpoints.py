"""Per-epoch checkpoints, so that a killed training run resumes.

After every epoch the model's weights, its optimizer's state (Adam's
moments and step count) and its dropout layers' random-number states are
written to a fresh folder, which is renamed into
place whole; then `state.json` is pointed at it by an atomic rename, and the
previous folder is removed. A kill at any moment leaves `state.json` naming a
complete checkpoint. `state.json` also holds the checkpoint files' sha256: a
checkpoint damaged later (a machine crash, a truncated copy) is not loaded;
the run says so in one line and starts over.

The state also records a fingerprint of the settings that shape training; a
run with other settings does not resume from it but starts over.
"""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
from absl import logging

from quickdraw import atomic_files
from quickdraw.errors import QuickDrawError

_STATE = "state.json"
_WEIGHTS = "model.weights.h5"
_RNG = "rng_states.npy"


def _rng_states(model: keras.Model) -> list:
  """The model's random-number states: each dropout (and augmentation)
  layer's seed generator. Keras' weight files leave them out, yet a resumed
  run must draw the same dropout masks as an uninterrupted one."""
  return [v for v in model.variables
          if v.path.endswith("seed_generator_state")]


class Checkpoints:
  """The checkpoint folder of one run.

  Args:
    folder: Where checkpoints live (created on first save).
    fingerprint: Identifies the settings; a saved state with another
      fingerprint is ignored.
    writable: False on the non-chief workers of a multi-worker run: they
      resume from the chief's checkpoints but never write or clear them.
  """

  def __init__(self, folder: str, fingerprint: str, writable: bool = True):
    self.folder = folder
    self.fingerprint = fingerprint
    self.writable = writable

  def _state(self) -> dict | None:
    try:
      with open(os.path.join(self.folder, _STATE)) as f:
        state = json.load(f)
      return state if isinstance(state, dict) and "dir" in state else None
    except (OSError, ValueError):
      return None

  def latest(self) -> dict | None:
    """The last saved state, {"phase", "epoch", "dir"}, or None.

    None also when the saved state belongs to other settings (logged).
    """
    path = os.path.join(self.folder, _STATE)
    if not os.path.exists(path):
      return None
    try:
      with open(path) as f:
        state = json.load(f)
    except (OSError, ValueError):
      logging.warning("%s is unreadable; starting over", path)
      return None
    if state.get("fingerprint") != self.fingerprint:
      logging.warning(
          "%s holds a run with other settings; starting over (it is "
          "replaced at the end of the first epoch)", self.folder)
      return None
    folder = os.path.join(self.folder, str(state.get("dir")))
    if not os.path.isdir(folder):
      return None
    if not atomic_files.sums_match(folder, state.get("sha256")):
      logging.warning("checkpoint %s is damaged (its checksum does not "
                      "match); starting over", folder)
      return None
    return state

  def save(self, phase: str, epoch: int, model: keras.Model) -> None:
    """Saves `model`'s weights and optimizer state after `epoch` epochs."""
    if not self.writable:
      return
    name = f"{phase}-{epoch:05d}"
    final = os.path.join(self.folder, name)
    tmp = os.path.join(self.folder, f".{name}.tmp")
    try:
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
      # Keras 3 stores the compiled optimizer's variables here too.
      model.save_weights(os.path.join(tmp, _WEIGHTS))
      states = _rng_states(model)
      if states:
        np.save(os.path.join(tmp, _RNG),
                np.stack([keras.ops.convert_to_numpy(v) for v in states]))
      sums = atomic_files.file_sums(tmp, sorted(os.listdir(tmp)))
      shutil.rmtree(final, ignore_errors=True)
      os.replace(tmp, final)
    except OSError as e:
      shutil.rmtree(tmp, ignore_errors=True)
      if atomic_files.is_disk_full(e):
        # Weights plus Adam's two moments, float32.
        raise atomic_files.disk_full_error(
            self.folder, "a checkpoint", 3 * sum(
                int(np.prod(w.shape)) * 4 for w in model.weights)) from None
      raise QuickDrawError(
          f"cannot write checkpoint {final}: {e.strerror or e}; free space "
          "or pass a writable --output_dir") from None
    previous = self._state()
    atomic_files.write_text(
        os.path.join(self.folder, _STATE),
        json.dumps({"fingerprint": self.fingerprint, "phase": phase,
                    "epoch": epoch, "dir": name, "sha256": sums}) + "\n")
    if previous and previous["dir"] != name:
      shutil.rmtree(os.path.join(self.folder, previous["dir"]),
                    ignore_errors=True)

  def restore(self, state: dict, model: keras.Model) -> None:
    """Loads a saved state into `model` and its compiled optimizer."""
    folder = os.path.join(self.folder, state["dir"])
    # Built first, so that load_weights restores Adam's moments and step
    # count instead of skipping them.
    if not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    try:
      model.load_weights(os.path.join(folder, _WEIGHTS))
      states = _rng_states(model)
      if states and os.path.exists(os.path.join(folder, _RNG)):
        for variable, value in zip(states, np.load(os.path.join(folder,
                                                                _RNG))):
          variable.assign(value)
    except (OSError, ValueError) as e:
      raise QuickDrawError(
          f"checkpoint {folder} cannot be loaded ({e}); delete {self.folder} "
          "to start over") from None

  def clear(self) -> None:
    """Removes every checkpoint (the run is complete)."""
    if not self.writable:
      return
    shutil.rmtree(self.folder, ignore_errors=True)


class SaveEachEpoch(keras.callbacks.Callback):
  """Saves a checkpoint at the end of every epoch of `fit`."""

  def __init__(self, checkpoints: Checkpoints, phase: str):
    super().__init__()
    self.checkpoints = checkpoints
    self.phase = phase

  def on_epoch_end(self, epoch, logs=None):
    self.checkpoints.save(self.phase, epoch + 1, self.model)
