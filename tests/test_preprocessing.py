"""Each op runs eagerly and inside tf.data.Dataset.map, with equal results."""

import numpy as np
import pytest
import tensorflow as tf

from quickdraw import canvases, preprocessing
from quickdraw.testing import synthetic

ROWS = np.concatenate([synthetic.make_drawings(c, 3) for c in range(3)])


def _in_pipeline(fn, x):
  ds = tf.data.Dataset.from_tensors(x).map(fn)
  return next(iter(ds)).numpy()


def _reference(images, size):
  x = tf.image.resize(tf.cast(images, tf.float32), (size, size))
  return tf.image.grayscale_to_rgb(x / 127.5 - 1.0).numpy()


def test_rows_to_images():
  eager = preprocessing.rows_to_images(ROWS).numpy()
  assert eager.shape == (9, 28, 28, 1) and eager.dtype == np.uint8
  np.testing.assert_array_equal(eager[4, :, :, 0], ROWS[4].reshape(28, 28))
  np.testing.assert_array_equal(
      _in_pipeline(preprocessing.rows_to_images, ROWS), eager)
  assert preprocessing.rows_to_images(ROWS[0]).shape == (28, 28, 1)


@pytest.mark.parametrize("size", [128, 160, 192, 224])
def test_upsample_matches_tf_image_resize(size):
  images = preprocessing.rows_to_images(ROWS)
  eager = preprocessing.upsample_to_rgb(images, size).numpy()
  assert eager.shape == (9, size, size, 3) and eager.dtype == np.float32
  np.testing.assert_allclose(eager, _reference(images, size), atol=1e-5)
  assert eager.min() >= -1.0 - 1e-6 and eager.max() <= 1.0 + 1e-6
  np.testing.assert_array_equal(eager[..., 0], eager[..., 2])  # gray RGB
  piped = _in_pipeline(lambda x: preprocessing.upsample_to_rgb(x, size), images)
  np.testing.assert_allclose(piped, eager, atol=1e-6)


def test_upsample_a_single_image_and_full_range():
  image = np.zeros((28, 28, 1), np.uint8)
  image[:14] = 255
  out = preprocessing.upsample_to_rgb(image, 224).numpy()
  assert out.shape == (224, 224, 3)
  assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)


def test_scale_and_invert():
  x = np.array([0, 127, 255], np.uint8)
  np.testing.assert_allclose(preprocessing.scale_to_unit_range(x).numpy(),
                             [-1.0, 127 / 127.5 - 1, 1.0], atol=1e-6)
  np.testing.assert_array_equal(preprocessing.invert(x).numpy(), [255, 128, 0])
  np.testing.assert_array_equal(_in_pipeline(preprocessing.invert, x),
                                [255, 128, 0])


def test_affine_identity_is_the_plain_upsample():
  drawings = synthetic.make_drawings(0, 3, seed=1).reshape(-1, 28, 28, 1)
  plain = preprocessing.upsample_to_rgb(drawings, 64).numpy()
  same = preprocessing.affine_upsample_to_rgb(
      drawings, 64, tf.zeros([3]), tf.ones([3]), tf.zeros([3, 2])).numpy()
  # Inside the outermost half pixel, where edge handling differs.
  np.testing.assert_allclose(same[:, 2:-2, 2:-2], plain[:, 2:-2, 2:-2],
                             atol=1e-5)


def test_affine_shift_moves_the_drawing():
  drawings = np.zeros((1, 28, 28, 1), np.uint8)
  drawings[0, 10, 10] = 255
  moved = preprocessing.affine_upsample_to_rgb(
      drawings, 28, tf.zeros([1]), tf.ones([1]), tf.constant([[3.0, -2.0]]))
  y, x = np.unravel_index(np.argmax(moved.numpy()[0, :, :, 0]), (28, 28))
  assert (y, x) == (8, 13)


def test_random_affine_is_seeded_and_same_in_tf_data():
  drawings = synthetic.make_drawings(1, 4, seed=2).reshape(-1, 28, 28, 1)
  seed = tf.constant([3, 7], tf.int64)
  eager = preprocessing.random_affine_upsample_to_rgb(drawings, 48, seed)
  mapped = next(iter(tf.data.Dataset.from_tensors(drawings).map(
      lambda d: preprocessing.random_affine_upsample_to_rgb(d, 48, seed))))
  np.testing.assert_allclose(eager.numpy(), mapped.numpy(), atol=1e-6)
  other = preprocessing.random_affine_upsample_to_rgb(
      drawings, 48, tf.constant([3, 8], tf.int64))
  assert eager.shape == (4, 48, 48, 3)
  assert float(tf.reduce_min(eager)) >= -1 and float(tf.reduce_max(eager)) <= 1
  assert not np.allclose(eager.numpy(), other.numpy())


def _canvas(size=200, box=(40, 60, 120, 100), dark_on_light=True):
  """A canvas with a filled rectangle (top, left, height, width) of ink."""
  ink = np.zeros((size, size), bool)
  top, left, height, width = box
  ink[top:top + height, left:left + width] = True
  grey = np.where(ink, 0, 255) if dark_on_light else np.where(ink, 255, 0)
  return np.repeat(grey.astype(np.uint8)[..., None], 3, -1)


def test_canvas_to_drawings_frames_like_quickdraw():
  for dark in (True, False):
    drawing = preprocessing.canvas_to_drawings(
        _canvas(dark_on_light=dark)[None]).numpy()[0]
    assert drawing.shape == (28, 28) and drawing.max() == 255
    rows = np.flatnonzero(drawing.max(1))
    cols = np.flatnonzero(drawing.max(0))
    # The box's long side (120 rows) spans pixels 1..26; centred across.
    assert (rows[0], rows[-1]) == (1, 26)
    assert cols[0] + cols[-1] == 27 and cols[-1] - cols[0] < 25
    np.testing.assert_array_equal(drawing, np.round(drawing))


def test_canvas_position_and_size_do_not_matter():
  a = preprocessing.canvas_to_drawings(
      _canvas(300, (10, 20, 120, 100))[None]).numpy()
  b = preprocessing.canvas_to_drawings(
      _canvas(300, (150, 170, 120, 100))[None]).numpy()
  np.testing.assert_array_equal(a, b)
  big = preprocessing.canvas_to_drawings(
      _canvas(600, (20, 40, 240, 200))[None]).numpy()
  assert np.abs(big - a).max() <= 2  # the same shape at twice the size


def test_blank_canvases_give_blank_drawings():
  white = np.full((1, 120, 160, 3), 255, np.uint8)
  faint = white.copy()
  faint[0, 50:60, 20:100] = 240  # a smudge, not ink
  for canvas in (white, np.zeros_like(white), faint):
    assert not preprocessing.canvas_to_drawings(canvas).numpy().any()


def test_a_28x28_picture_keeps_its_framing():
  drawings = synthetic.make_drawings(3, 2).reshape(-1, 28, 28, 1)
  np.testing.assert_array_equal(
      preprocessing.canvas_to_drawings(drawings).numpy(), drawings[..., 0])
  np.testing.assert_array_equal(
      preprocessing.canvas_to_drawings(255 - drawings).numpy(),
      drawings[..., 0])  # dark on light is inverted


def test_canvas_to_drawings_same_eagerly_in_tf_data_and_in_a_batch():
  canvases = np.stack([_canvas(),
                       _canvas(box=(5, 5, 30, 190), dark_on_light=False)])
  eager = preprocessing.canvas_to_drawings(canvases).numpy()
  mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(canvases).map(
      lambda c: preprocessing.canvas_to_drawings(c[None])[0])
                         .as_numpy_iterator()))
  np.testing.assert_array_equal(eager, mapped)
  for i in range(2):  # each canvas alone gives the same as in the batch
    np.testing.assert_array_equal(
        preprocessing.canvas_to_drawings(canvases[i:i + 1]).numpy()[0],
        eager[i])


THEMED = np.concatenate([synthetic.make_drawings(c, 4, seed=5)
                         for c in range(6)])


@pytest.mark.parametrize("theme", sorted(set(canvases.THEMES) - {"white"}))
def test_every_theme_gives_the_white_canvas_drawing(theme):
  """Dark, grey and coloured canvases, coloured ink, anti-aliased edges and
  a vignette: the model sees the drawing it sees on a white canvas."""
  white = preprocessing.canvas_to_drawings(
      canvases.redraw(THEMED, 256, seed=3, theme="white")).numpy()
  themed = preprocessing.canvas_to_drawings(
      canvases.redraw(THEMED, 256, seed=3, theme=theme)).numpy()
  difference = np.abs(themed - white).mean((1, 2))  # grey levels, of 255
  # Measured: under 0.1 for flat themes, 2.5 for the vignette.
  assert difference.max() < 8, difference.max()
  assert white.max((1, 2)).min() == 255  # none taken for too little ink


def _disc_and_tick(size, extent):
  """Black-on-white canvases: a dot, and a tick spanning `extent` of the
  canvas, both drawn with a pen 1.5% of the canvas wide."""
  pen = max(2, int(0.015 * size))
  y, x = np.mgrid[:size, :size]
  dot = (x - size / 2) ** 2 + (y - size / 3) ** 2 <= pen ** 2
  tick = np.zeros((size, size), bool)
  n = int(extent * size)
  for i in range(n):  # down-right for a third, then up-right
    row = size // 2 + (i if i < n // 3 else 2 * (n // 3) - i)
    tick[row - pen // 2:row + pen // 2 + 1,
         size // 4 + i:size // 4 + i + pen] = True
  return [np.repeat(np.where(m, 0, 255).astype(np.uint8)[..., None], 3, -1)
          for m in (dot, tick)]


@pytest.mark.parametrize("size", [256, 1080])
def test_a_dot_or_a_tick_is_too_little_ink(size):
  for picture in _disc_and_tick(size, 0.04):
    assert not preprocessing.canvas_to_drawings(picture[None]).numpy().any()


def test_small_real_drawings_are_not_too_little_ink():
  """Drawings drawn at 1/8 of the canvas, the smallest the rule keeps."""
  small = canvases.redraw(THEMED, 512, seed=2, theme="white",
                          extent=(0.125, 0.125))
  drawings = preprocessing.canvas_to_drawings(small).numpy()
  assert drawings.max((1, 2)).min() == 255


def test_a_non_square_dark_canvas_padded_with_its_background():
  """The README's Kotlin snippet pads a dark portrait canvas to a square
  with its own background colour; MediaPipe then shrinks it to the model's
  256 px. The model sees the drawing a white canvas gives."""
  drawings = THEMED[::8]
  paper = canvases.THEMES["dark"].paper
  tall = np.empty((len(drawings), 960, 540, 3), np.uint8)
  tall[:] = paper
  tall[:, 210:750] = canvases.redraw(drawings, 540, seed=4, theme="dark")
  square = np.empty((len(drawings), 960, 960, 3), np.uint8)
  square[:] = paper  # the snippet's drawColor(background)
  square[:, :, 210:750] = tall

  def seen(pictures):
    return preprocessing.canvas_to_drawings(tf.image.resize(
        pictures, (256, 256), method="bilinear").numpy()).numpy()

  white = np.full_like(square, 255)
  white[:, 210:750, 210:750] = canvases.redraw(drawings, 540, seed=4,
                                               theme="white")
  expected = seen(white)
  assert np.abs(seen(square) - expected).mean((1, 2)).max() < 8
  # Padded with white instead (the snippet's old drawColor(Color.WHITE)),
  # the dark canvas sits in a frame the model takes for ink.
  square[:] = 255
  square[:, :, 210:750] = tall
  assert np.abs(seen(square) - expected).mean((1, 2)).min() > 20


def test_the_traced_canvas_reading_gives_the_eager_bytes():
  """`compiled_canvas_to_drawings` (traced: half the time) reads pen-drawn
  canvases and junk exactly as `canvas_to_drawings` does."""
  pictures = np.concatenate([
      canvases.pen_suite(synthetic.make_drawings(2, 27), 96, seed=1)[0],
      canvases.junk("scribble", 5, 96), canvases.junk("text", 5, 96)])
  np.testing.assert_array_equal(
      preprocessing.compiled_canvas_to_drawings(pictures).numpy(),
      preprocessing.canvas_to_drawings(pictures).numpy())
  # Traced only for enough canvases to repay the trace.
  assert preprocessing.canvas_reader(preprocessing.TRACED_FROM) is (
      preprocessing.compiled_canvas_to_drawings)
  assert preprocessing.canvas_reader(preprocessing.TRACED_FROM - 1) is (
      preprocessing.canvas_to_drawings)
  # canvases.read_back: the same drawings, in batches, as uint8.
  read = canvases.read_back(pictures, batch=16)
  assert read.dtype == np.uint8 and read.shape == (len(pictures), 28, 28)
  np.testing.assert_array_equal(
      read, preprocessing.canvas_to_drawings(pictures).numpy())
  assert canvases.read_back(pictures[:0]).shape == (0, 28, 28)
