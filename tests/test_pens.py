"""The pen without TensorFlow: the same upsampling as TensorFlow's, and the
same canvases drawn in worker processes as here."""

import os
from unittest import mock

import numpy as np
import tensorflow as tf

from quickdraw import pens
from quickdraw.testing import synthetic


def test_upsampling_is_tensorflow_s_to_the_bit():
  """centre_lines' bilinear upsampling (numpy, so that workers need no
  TensorFlow) gives `tf.image.resize`'s very floats: the skeleton, and so
  every re-draw, is unchanged."""
  rng = np.random.default_rng(0)
  pictures = [rng.integers(0, 256, (28, 28)), np.zeros((28, 28)),
              np.full((28, 28), 255), *synthetic.make_drawings(0, 6)
              .reshape(-1, 28, 28)]
  for picture in pictures:
    picture = np.asarray(picture, np.float32)
    expected = tf.image.resize(picture[..., None], (112, 112)).numpy()
    np.testing.assert_array_equal(pens.upsample(picture, 4), expected[..., 0])


def _wanted(count):
  drawings = synthetic.make_drawings(1, count).reshape(-1, 28, 28)
  themes = list(pens.THEMES)
  return [(d, 64, 1.5 + i % 4, (4.0 + i % 7, 6.0, 40.0 + i % 9),
           themes[i % len(themes)]) for i, d in enumerate(drawings)]


def test_workers_draw_the_same_canvases_in_order(monkeypatch):
  wanted = _wanted(130)
  here = np.concatenate(list(pens.draw(wanted)))
  assert here.shape == (130, 64, 64, 3) and here.any()
  monkeypatch.setattr(pens, "MIN_PARALLEL", 0)
  monkeypatch.setattr(pens, "_CHUNK", 7)  # many chunks, several in flight
  monkeypatch.setattr(pens.os, "sched_getaffinity", lambda pid: {0, 1})
  assert pens._workers(len(wanted)) == 2
  batches = list(pens.draw(wanted))
  assert {len(b) for b in batches[:-1]} == {7}
  np.testing.assert_array_equal(np.concatenate(batches), here)


def test_few_canvases_one_core_or_no_fork_draw_here(monkeypatch):
  assert pens._workers(pens.MIN_PARALLEL - 1) == 0
  monkeypatch.setattr(pens.os, "sched_getaffinity", lambda pid: {0})
  assert pens._workers(10 * pens.MIN_PARALLEL) == 0
  monkeypatch.setattr(pens.os, "sched_getaffinity", lambda pid: {0, 1, 2})
  assert pens._workers(10 * pens.MIN_PARALLEL) == 3
  monkeypatch.setattr(pens.sys, "platform", "darwin")
  assert pens._workers(10 * pens.MIN_PARALLEL) == 0


def test_a_dead_worker_leaves_the_rest_to_this_process(monkeypatch):
  """Workers that die (killed for memory, say) do not fail the run: the
  canvases not given back yet are drawn here, the same bytes."""
  wanted = _wanted(40)
  here = np.concatenate(list(pens.draw(wanted)))
  monkeypatch.setattr(pens, "MIN_PARALLEL", 0)
  monkeypatch.setattr(pens, "_CHUNK", 5)
  monkeypatch.setattr(pens.os, "sched_getaffinity", lambda pid: {0, 1})
  real, parent = pens.paint, os.getpid()

  def dies_in_a_worker(*args):
    if os.getpid() != parent:
      os._exit(1)
    return real(*args)
  # Looked up in the worker, which forked with this module as it is now.
  monkeypatch.setattr(pens, "paint", dies_in_a_worker)
  with mock.patch.object(pens.logging, "warning") as warned:
    drawn = np.concatenate(list(pens.draw(wanted)))
  np.testing.assert_array_equal(drawn, here)
  assert warned.called
