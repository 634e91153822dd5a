import os

import numpy as np
import pytest

from quickdraw import npy_files
from quickdraw.testing import synthetic
from quickdraw.errors import QuickDrawError

DRAWINGS = synthetic.make_drawings(0, 5)


@pytest.mark.parametrize("shape", [(5, 784), (5, 1, 784), (5, 28, 28)])
def test_accepted_shapes_open_as_flat_memmaps(tmp_path, shape):
  path = str(tmp_path / "cat.npy")
  np.save(path, DRAWINGS.reshape(shape))
  f = npy_files.open_drawings(path, "cat")
  assert isinstance(f.drawings, np.memmap)  # mapped, not read into memory
  assert f.drawings.shape == (5, 784)
  np.testing.assert_array_equal(f.drawings, DRAWINGS)
  assert len(f) == 5
  f.release_pages()  # must leave the data readable
  np.testing.assert_array_equal(f.drawings[3], DRAWINGS[3])


def test_finds_official_and_gsutil_names(tmp_path):
  assert npy_files.find_category_file(str(tmp_path), "smiley face") is None
  gsutil = tmp_path / "full_numpy_bitmap_smiley face.npy"
  np.save(gsutil, DRAWINGS)
  assert npy_files.find_category_file(str(tmp_path), "smiley face") == str(gsutil)
  official = tmp_path / "smiley face.npy"
  np.save(official, DRAWINGS)
  assert npy_files.find_category_file(str(tmp_path), "smiley face") == str(
      official)


def _bad_file(tmp_path, kind):
  path = str(tmp_path / "cat.npy")
  if kind == "dtype":
    np.save(path, DRAWINGS.astype(np.float32))
  elif kind == "width":
    np.save(path, np.zeros((5, 785), np.uint8))
  elif kind == "rank":
    np.save(path, np.zeros((784,), np.uint8))
  elif kind == "not_npy":
    with open(path, "w") as f:
      f.write("<html>404 Not Found</html>")
  elif kind == "empty_file":
    open(path, "wb").close()
  elif kind == "truncated":
    np.save(path, DRAWINGS)
    os.truncate(path, os.path.getsize(path) - 100)
  elif kind == "zero_rows":
    np.save(path, np.zeros((0, 784), np.uint8))
  elif kind == "fortran":
    np.save(path, np.asfortranarray(DRAWINGS))
  elif kind == "folder":
    os.mkdir(path)
  return path


@pytest.mark.parametrize("kind, message", [
    ("dtype", "{p}: holds float32 values, expected uint8 drawings (0-255); "
              "save numpy.clip(numpy.round(array), 0, 255).astype(numpy.uint8)"
              ", or use the official file"),
    ("width", "{p}: holds an array of shape (5, 785), expected (N, 784), "
              "(N, 1, 784) or (N, 28, 28) uint8 drawings of 28x28 pixels"),
    ("rank", "{p}: holds an array of shape (784,), expected (N, 784), "
             "(N, 1, 784) or (N, 28, 28) uint8 drawings of 28x28 pixels"),
    ("not_npy", "{p}: not a readable .npy file (the magic string is not "
                "correct; expected b'\\x93NUMPY', got b'<html>'); delete it "
                "and download it again, or save the array with numpy.save"),
    ("empty_file", "{p}: not a readable .npy file (EOF: reading magic string, "
                   "expected 8 bytes got 0); delete it and download it again, "
                   "or save the array with numpy.save"),
    ("truncated", "{p}: is truncated: its header promises 5 drawings (4048 "
                  "bytes) but it holds 3948 bytes; delete it and download it "
                  "again"),
    ("zero_rows", "{p}: holds no drawings (shape (0, 784)); delete it and "
                  "download it again"),
    ("fortran", "{p}: is stored in Fortran order; re-save it with "
                "numpy.save(path, numpy.ascontiguousarray(array))"),
    ("folder", "{p}: is a folder, not a .npy file; move it out of the data "
               "directory"),
])
def test_bad_files_fail_with_one_line_naming_them(tmp_path, kind, message):
  path = _bad_file(tmp_path, kind)
  with pytest.raises(QuickDrawError) as e:
    npy_files.open_drawings(path, "cat")
  assert str(e.value) == message.format(p=path)
  assert "\n" not in str(e.value)
