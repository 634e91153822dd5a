import numpy as np

from quickdraw import npy_files
from quickdraw.testing import synthetic


def _centred(drawings):
  """Rolls each drawing so its ink's centroid is at the middle."""
  out = []
  for image in drawings.reshape(-1, 28, 28).astype(float):
    ys, xs = np.nonzero(image)
    out.append(np.roll(image, (14 - round(ys.mean()), 14 - round(xs.mean())),
                       (0, 1)))
  return np.stack(out).reshape(len(out), -1)


def test_classes_differ_and_drawings_vary():
  classes = 8
  a = synthetic.make_drawings(0, 40)
  assert a.dtype == np.uint8 and a.shape == (40, 784)
  assert set(np.unique(a)) == {0, 255}  # light ink on black
  assert len({row.tobytes() for row in a}) == 40  # no two alike
  # 1-nearest-neighbour on centred drawings tells held-out drawings apart:
  # the figures differ visibly, not only by position.
  reference = np.concatenate([
      _centred(synthetic.make_drawings(c, 40, seed=0)) for c in range(classes)])
  labels = np.repeat(np.arange(classes), 40)
  correct = 0
  for c in range(classes):
    held_out = _centred(synthetic.make_drawings(c, 40, seed=1))
    d = ((held_out[:, None] - reference[None]) ** 2).sum(-1)
    correct += (labels[d.argmin(1)] == c).sum()
  assert correct / (40 * classes) > 0.95


def test_written_files_load_like_official_ones(tmp_path):
  paths = synthetic.write_category_files(str(tmp_path), ["cat", "smiley face"],
                                         [30, 7], layout="gsutil", variants=4)
  assert paths[1].endswith("full_numpy_bitmap_smiley face.npy")
  f = npy_files.open_drawings(paths[0], "cat")
  assert f.drawings.shape == (30, 784)
  np.testing.assert_array_equal(f.drawings[4], f.drawings[0])  # 4 variants
  np.testing.assert_array_equal(f.drawings[:4], synthetic.make_drawings(0, 4))
