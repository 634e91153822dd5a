"""Sampled runs fetch their rows by HTTP Range from a local server that
behaves like cloud storage (`range_server`); no network."""

import dataclasses
import hashlib
import io
import os

import numpy as np
import pytest

from quickdraw import categories as categories_lib
from quickdraw import npy_files, remote_rows, splits
from quickdraw.testing import range_server, synthetic
from quickdraw.categories import Category
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

NAMES = ("cat", "smiley face")
ROWS = (3000, 2200)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
  """Generated files (one with the official 80-byte header) and
  official-style records for them."""
  folder = str(tmp_path_factory.mktemp("mirror"))
  paths = synthetic.write_category_files(folder, list(NAMES), list(ROWS))
  # The official files' header is 80 bytes; numpy writes 128 now.
  drawings = np.load(paths[0])
  with open(paths[0], "wb") as f:
    f.write(range_server.official_header(len(drawings)) + drawings.tobytes())
  records = {}
  for name, path in zip(NAMES, paths):
    data = open(path, "rb").read()
    records[name] = Category(name, "https://example.invalid/" + name,
                             len(data), hashlib.sha256(data).hexdigest())
  return folder, records


@pytest.fixture
def official(mirror, monkeypatch):
  records = dict(categories_lib.official_categories())
  records.update(mirror[1])
  monkeypatch.setattr(categories_lib, "official_categories", lambda: records)
  return records


@pytest.fixture
def server(mirror):
  folder = mirror[0]
  with range_server.RangeServer(
      {f"{n}.npy": os.path.join(folder, f"{n}.npy") for n in NAMES}) as s:
    yield s


def _config(data_dir, server_url, samples=300, **kw):
  return DataConfig(categories=NAMES, data_dir=str(data_dir),
                    download_base_url=server_url, samples_per_class=samples,
                    **kw)


def _open(config):
  return QuickDrawSource.open(config, progress_stream=io.StringIO())


def _assert_same_as_whole_files(source, mirror_folder, samples):
  whole = QuickDrawSource.open(DataConfig(
      categories=NAMES, data_dir=mirror_folder, samples_per_class=samples,
      download=False))
  for split in Split:
    ours, theirs = source.index(split), whole.index(split)
    np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
    np.testing.assert_array_equal(ours.rows, theirs.rows)
    np.testing.assert_array_equal(source.gather(ours.class_ids, ours.rows),
                                  whole.gather(theirs.class_ids, theirs.rows))


def test_fetched_rows_are_those_of_the_whole_files(mirror, official, server,
                                                   tmp_path):
  source = _open(_config(tmp_path, server.url))
  assert all(isinstance(f, remote_rows.RowFile) for f in source.files)
  assert [len(f) for f in source.files] == list(ROWS)
  _assert_same_as_whole_files(source, mirror[0], 300)
  # Only the rows (plus two 1 KB header probes): 10 blocks of 32 rows each.
  row_bytes = 2 * 300 * npy_files.PIXELS
  assert row_bytes <= server.bytes_sent <= 1.1 * row_bytes + 2048
  assert server.requests <= 2 + 2 * 10
  assert not any(name.endswith(".npy") for name in os.listdir(tmp_path))


def test_the_cache_serves_reruns_offline_and_larger_samples_fetch_the_rest(
    mirror, official, server, tmp_path):
  _open(_config(tmp_path, server.url))
  first_bytes = server.bytes_sent
  # Offline: no server, no --download.
  source = _open(_config(tmp_path, "http://127.0.0.1:9", download=False))
  _assert_same_as_whole_files(source, mirror[0], 300)
  assert server.bytes_sent == first_bytes

  source = _open(_config(tmp_path, server.url, samples=600))
  _assert_same_as_whole_files(source, mirror[0], 600)
  extra = server.bytes_sent - first_bytes
  assert extra <= 1.1 * 2 * 300 * npy_files.PIXELS  # the new rows alone


def test_a_corrupt_cache_entry_is_fetched_again(mirror, official, server,
                                                tmp_path, caplog):
  _open(_config(tmp_path, server.url))
  folder = remote_rows.cache_dir(str(tmp_path), official["cat"])
  entry = next(os.path.join(folder, n) for n in os.listdir(folder)
               if n.endswith(".npz"))
  with open(entry, "r+b") as f:
    f.seek(os.path.getsize(entry) // 2)
    f.write(os.urandom(4096))
  before = server.bytes_sent
  source = _open(_config(tmp_path, server.url))
  _assert_same_as_whole_files(source, mirror[0], 300)
  assert any("corrupt row cache entry" in r.getMessage()
             for r in caplog.records)
  assert server.bytes_sent - before >= 300 * npy_files.PIXELS

  # Truncated, too.
  entry = next(os.path.join(folder, n) for n in os.listdir(folder)
               if n.endswith(".npz"))
  with open(entry, "r+b") as f:
    f.truncate(1000)
  _assert_same_as_whole_files(_open(_config(tmp_path, server.url)),
                              mirror[0], 300)


def test_a_server_that_ignores_range_gets_whole_verified_files(
    mirror, official, server, tmp_path):
  server.ignore_range = True
  progress = io.StringIO()
  source = QuickDrawSource.open(_config(tmp_path, server.url),
                                progress_stream=progress)
  assert "ignores Range requests; downloading whole files" in (
      progress.getvalue())
  assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".npy")) == [
      "cat.npy", "smiley face.npy"]
  assert all(isinstance(f, npy_files.DrawingFile) for f in source.files)
  _assert_same_as_whole_files(source, mirror[0], 300)


def test_dropped_connections_and_5xx_are_retried(mirror, official, server,
                                                 tmp_path, monkeypatch):
  monkeypatch.setattr(remote_rows, "BACKOFF_S", 0.01)
  server.drop_next = 3
  server.fail_next = 2
  source = _open(_config(tmp_path, server.url))
  _assert_same_as_whole_files(source, mirror[0], 300)


def test_an_interrupted_fetch_keeps_whole_entries_and_resumes(
    mirror, official, server, tmp_path, monkeypatch):
  monkeypatch.setattr(remote_rows, "ENTRY_ROWS", 64)
  calls = []

  def interrupt(self, done):
    calls.append(done)
    if len(calls) == 8:
      raise KeyboardInterrupt

  monkeypatch.setattr(remote_rows.Progress, "update", interrupt)
  with pytest.raises(KeyboardInterrupt):
    _open(_config(tmp_path, server.url))
  monkeypatch.undo()
  monkeypatch.setattr(categories_lib, "official_categories",
                      lambda: official)
  folder = remote_rows.cache_dir(str(tmp_path), official["cat"])
  names = os.listdir(folder)
  # Only whole entries (or none) under the loader's names, no temporaries.
  assert all(remote_rows._ENTRY.match(n) or n == "meta.json" for n in names)
  # Rows held that the run needs: an entry also holds the few rows between
  # two sampled blocks that one request bridged (`coalesce`).
  held = sum(np.isin(splits.sample_rows(0, n, rows, 300), remote_rows.RowCache(
      str(tmp_path), official[n]).load()[0]).sum()
             for n, rows in zip(NAMES, ROWS))
  assert 0 < held < 600
  server.wait_idle()  # the interrupted run's last requests, still running
  before = len(server.served)
  source = _open(_config(tmp_path, server.url))
  _assert_same_as_whole_files(source, mirror[0], 300)
  # The rows the rerun asked for, each once: a request retried after a
  # dropped connection on a loaded machine sends its rows again.
  fetched = 0
  for n, count in zip(NAMES, ROWS):
    header = os.path.getsize(os.path.join(mirror[0], f"{n}.npy")) - (
        count * npy_files.PIXELS)
    fetched += len(set().union(*(
        range((start - header) // npy_files.PIXELS,
              (stop - header) // npy_files.PIXELS)
        for name, start, stop in server.served[before:]
        if name == f"{n}.npy")))
  assert fetched <= 1.1 * (600 - held)


def test_a_wrong_total_length_is_refused(official, server, tmp_path):
  server.total_override = official["cat"].size + 784
  with pytest.raises(QuickDrawError) as e:
    _open(_config(tmp_path, server.url))
  assert str(e.value).startswith(f"{server.url}/cat.npy is ")
  assert "not the official" in str(e.value)
  assert "\n" not in str(e.value)


def test_a_wrong_header_is_refused(mirror, official, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  data = open(os.path.join(mirror[0], "cat.npy"), "rb").read()
  header = range_server.official_header(ROWS[0] // 2)
  (bad / "cat.npy").write_bytes(header + data[80:])
  with range_server.RangeServer({"cat.npy": str(bad / "cat.npy")}) as s:
    config = DataConfig(categories=("cat",), data_dir=str(tmp_path / "d"),
                        download_base_url=s.url, samples_per_class=300)
    with pytest.raises(QuickDrawError) as e:
      _open(config)
  assert "do not fill" in str(e.value) and "not the official" in str(e.value)


def test_an_unreachable_server_fails_in_one_line(official, tmp_path,
                                                 monkeypatch):
  monkeypatch.setattr(remote_rows, "BACKOFF_S", 0.01)
  url = "http://127.0.0.1:9"
  with pytest.raises(QuickDrawError) as e:
    _open(_config(tmp_path, url))
  message = str(e.value)
  assert message.startswith(f"could not fetch rows of 'cat' from {url}/cat.npy")
  assert "--download_base_url" in message and "gsutil cp" in message
  assert "\n" not in message


def test_all_rows_and_files_on_disk_work_as_before(mirror, official, server,
                                                   tmp_path):
  source = _open(_config(tmp_path, server.url, samples=0))
  assert all(isinstance(f, npy_files.DrawingFile) for f in source.files)
  assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".npy")) == [
      "cat.npy", "smiley face.npy"]
  requests = server.requests
  _open(_config(tmp_path, server.url))  # sampled, but the files are here
  assert server.requests == requests


def test_rows_are_sampled_in_blocks():
  rows = splits.sample_rows(0, "cat", 100_000, 1000)
  blocks = np.unique(rows // splits.SAMPLE_BLOCK_ROWS)
  assert len(rows) == 1000
  assert len(blocks) == -(-1000 // splits.SAMPLE_BLOCK_ROWS)
  assert len(remote_rows.coalesce(rows)) <= len(blocks)
  # A short last block still gives exactly the count asked for.
  for n in (1000, 1001, 1031):
    assert len(splits.sample_rows(3, "dog", n, n - 1)) == n - 1


def test_other_categories_come_by_row(mirror, server, tmp_path,
                                      monkeypatch):
  """The default other categories (`others`): sampled from the official
  names not chosen, fetched by row from a server that answers ranges."""
  from quickdraw import others
  monkeypatch.setattr(categories_lib, "official_categories",
                      lambda: dict(mirror[1]))
  data = DataConfig(categories=("cat",), data_dir=str(tmp_path),
                    download_base_url=server.url, samples_per_class=300)
  got = others.open_others(data)
  assert got.categories == ("smiley face",)
  assert got.exposure.shape == (others.DRAWINGS_PER_CATEGORY, 784)
  whole = np.load(os.path.join(mirror[0], "smiley face.npy"))
  rows = splits.sample_rows(data.seed, "smiley face", len(whole),
                            others.DRAWINGS_PER_CATEGORY)
  np.testing.assert_array_equal(got.exposure, whole[rows])
  # Rows in the row cache, never the whole file.
  assert not (tmp_path / "smiley face.npy").exists()
  assert os.path.isdir(remote_rows.cache_dir(str(tmp_path),
                                             mirror[1]["smiley face"]))
  # Spread thinner over more categories: the fetch takes that many rows.
  monkeypatch.setattr(others, "ROWS", 40)
  thinner = others.open_others(dataclasses.replace(
      data, data_dir=str(tmp_path / "thinner")))
  assert thinner.drawings_per_category == 40
  np.testing.assert_array_equal(
      thinner.exposure,
      whole[splits.sample_rows(data.seed, "smiley face", len(whole), 40)])
  assert others.describe(thinner)["drawings_per_category"] == 40
