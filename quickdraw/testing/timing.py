"""Timing helpers for the benchmarks."""

from __future__ import annotations

import time

import numpy as np

from quickdraw import canvases, inference
from quickdraw.testing import synthetic


def tflite_latency(path: str, runs: int = 50) -> float:
  """Median seconds of one single-input TFLite inference on one thread:
  a drawing's model input, or for a canvas model a re-drawn canvas."""
  predictor = inference.TFLitePredictor(path, batch_size=1, num_threads=1)
  if predictor.takes_canvas:
    x = canvases.redraw(synthetic.make_drawings(0, 1),
                        predictor.canvas_shape[0])
  else:
    x = np.random.default_rng(0).uniform(
        *predictor.input_range,
        (1, predictor.image_size, predictor.image_size, 3)).astype(np.float32)
  predictor(x)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    predictor(x)
    times.append(time.perf_counter() - start)
  return float(np.median(times))
