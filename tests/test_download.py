"""Downloads against a local HTTP server and file:// URLs; no network."""

import functools
import hashlib
import http.server
import io
import os
import socket
import urllib.parse

import numpy as np
import pytest

from quickdraw import categories as categories_lib
from quickdraw import download
from quickdraw.testing import synthetic
from quickdraw.categories import Category
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError

from conftest import serve_in_background


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
  """A folder of generated files and official-style records for them."""
  folder = str(tmp_path_factory.mktemp("mirror"))
  names = ["cat", "smiley face"]
  paths = synthetic.write_category_files(folder, names, 50)
  records = {}
  for name, path in zip(names, paths):
    data = open(path, "rb").read()
    records[name] = Category(
        name, f"https://example.invalid/numpy_bitmap/{name}.npy", len(data),
        hashlib.sha256(data).hexdigest())
  return folder, records


@pytest.fixture(scope="module")
def server(mirror):
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=mirror[0])
  handler.log_message = lambda *a: None
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  serve_in_background(httpd)
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_download_over_http_is_verified_and_complete(mirror, server, tmp_path):
  folder, records = mirror
  progress = io.StringIO()
  path = download.download_category(records["smiley face"], str(tmp_path),
                                    server, progress_stream=progress)
  assert path == str(tmp_path / "smiley face.npy")
  assert open(path, "rb").read() == open(
      os.path.join(folder, "smiley face.npy"), "rb").read()
  assert os.listdir(tmp_path) == ["smiley face.npy"]
  assert "Downloading smiley face.npy:" in progress.getvalue()
  assert "(100%)" in progress.getvalue()


def test_download_from_file_url(mirror, tmp_path):
  folder, records = mirror
  base = "file://" + urllib.parse.quote(folder)
  path = download.download_category(records["cat"], str(tmp_path / "new"),
                                    base, progress_stream=io.StringIO())
  np.testing.assert_array_equal(np.load(path),
                                np.load(os.path.join(folder, "cat.npy")))


def test_official_url_is_quoted():
  record = categories_lib.official_categories()["smiley face"]
  assert download.category_url(record) == (
      "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"
      "smiley%20face.npy")
  assert download.category_url(record, "http://m/q/") == "http://m/q/smiley%20face.npy"


def test_offline_leaves_nothing_and_says_what_to_do(mirror, tmp_path):
  record = mirror[1]["cat"]
  base = f"http://127.0.0.1:{_free_port()}"
  with pytest.raises(QuickDrawError) as e:
    download.download_category(record, str(tmp_path), base,
                               progress_stream=io.StringIO())
  message = str(e.value)
  assert message.startswith(f"could not download 'cat' from {base}/cat.npy: ")
  assert "(offline?)" in message and "--download_base_url" in message
  assert ("gsutil cp 'gs://quickdraw_dataset/full/numpy_bitmap/cat.npy' "
          f"'{tmp_path}/')") in message
  assert os.listdir(tmp_path) == []


def test_http_error_leaves_nothing(mirror, server, tmp_path):
  record = Category("dog", "unused", 10, "0" * 64)
  with pytest.raises(QuickDrawError) as e:
    download.download_category(record, str(tmp_path), server,
                               progress_stream=io.StringIO())
  assert str(e.value).startswith(
      f"could not download 'dog' from {server}/dog.npy: HTTP 404 File not found; "
      "fetch it yourself (gsutil cp")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_checksum_or_size_mismatch_keeps_nothing(mirror, server, tmp_path,
                                                 field):
  good = mirror[1]["cat"]
  bad = Category(good.name, good.url,
                 good.size + 1 if field == "size" else good.size,
                 "f" * 64 if field == "sha256" else good.sha256)
  with pytest.raises(QuickDrawError) as e:
    download.download_category(bad, str(tmp_path), server,
                               progress_stream=io.StringIO())
  assert str(e.value).startswith(
      f"download of 'cat' from {server}/cat.npy does not match the official "
      f"record (got {good.size} bytes, sha256 {good.sha256[:16]}..., expected "
      f"{bad.size} bytes, sha256 {bad.sha256[:16]}...); nothing was kept; the "
      "mirror's cat.npy is not the official file (a subset, or another "
      "version); point --download_base_url at a full copy of the official "
      "files, or fetch it yourself")
  assert os.listdir(tmp_path) == []


def test_interrupted_download_leaves_nothing(mirror, server, tmp_path):
  class Interrupting(io.StringIO):
    def write(self, text):
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    download.download_category(mirror[1]["cat"], str(tmp_path), server,
                               progress_stream=Interrupting())
  assert os.listdir(tmp_path) == []


def test_unwritable_data_dir(mirror, server, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(QuickDrawError) as e:
    download.download_category(mirror[1]["cat"], str(blocker / "data"),
                               server, progress_stream=io.StringIO())
  assert str(e.value) == (
      f"cannot write to data directory {blocker}/data: Not a directory; pass "
      "--data_dir pointing to a writable folder")


def test_source_downloads_missing_files_only_when_allowed(
    mirror, server, tmp_path, monkeypatch):
  folder, records = mirror
  official = dict(categories_lib.official_categories())
  official.update(records)
  monkeypatch.setattr(categories_lib, "official_categories", lambda: official)
  data_dir = tmp_path / "data"
  config = DataConfig(categories=("cat",), data_dir=str(data_dir),
                      download=False)
  with pytest.raises(QuickDrawError) as e:
    QuickDrawSource.open(config)
  assert str(e.value) == (
      f"no file for category 'cat': looked for {data_dir}/cat.npy or "
      f"{data_dir}/full_numpy_bitmap_cat.npy; copy it there, or run without "
      "--nodownload to fetch it")
  # Every missing file in one error, not one per rerun.
  config = DataConfig(categories=("cat", "smiley face"), data_dir=str(data_dir),
                      download=False)
  with pytest.raises(QuickDrawError) as e:
    QuickDrawSource.open(config)
  assert str(e.value) == (
      f"no files for 2 categories in {data_dir}: 'cat', 'smiley face' (looked "
      "for <category>.npy and full_numpy_bitmap_<category>.npy); copy them "
      "there, or run without --nodownload to fetch them")

  # A temporary file left by a killed run is cleaned up, not loaded.
  data_dir.mkdir()
  (data_dir / ".cat.npy.x1y2.part").write_bytes(b"half")
  config = DataConfig(categories=("cat", "smiley face"), data_dir=str(data_dir),
                      download_base_url=server)
  source = QuickDrawSource.open(config, progress_stream=io.StringIO())
  assert sorted(os.listdir(data_dir)) == ["cat.npy", "smiley face.npy"]
  assert source.categories == ("cat", "smiley face")
  assert [len(f) for f in source.files] == [50, 50]
