"""Sampled runs fetch only their rows: HTTP Range requests into a row cache.

An official file is an 80-byte `.npy` header and then 784-byte rows, served
from cloud storage that answers `Range` requests. A run that uses
`samples_per_class` rows of a category it does not have asks for just those
rows (`splits.sample_rows` picks them in blocks of 32 consecutive rows: one
request a block), over a small pool of kept-alive connections, instead of
downloading the whole file (1.19 GB for the quickstart's 7.8 MB of rows).

What is fetched is cached under the data directory, in `<name>.rows/`:
`meta.json` (the file's size, header and row count) and entries
`<first row>-<rows>-<digest>.npz` holding row numbers and drawings. The
digest (sha256 of both) is checked on every load: a corrupt or truncated
entry is deleted and fetched again, never used. Entries are written by
rename, a few thousand rows at a time, so a killed fetch resumes from the
rows already cached, and a rerun, or a larger `samples_per_class`, fetches
only rows it lacks; once cached, a run needs no network.

Verified: the server's total length (`Content-Range: bytes a-b/TOTAL`)
equals the official size and the header gives the official shape. The
whole file's sha256 cannot be checked without the whole file: for that,
pass `--samples_per_class=0` or download the files (README, "Data").

The client is the standard library's `http.client` over a thread pool, not
`fsspec`: fsspec's HTTP filesystem needs aiohttp (not otherwise installed)
and a request here is a plain GET with one header, retried with back-off.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import io
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import TextIO

import numpy as np
from absl import logging

from quickdraw import atomic_files
from quickdraw import download as download_lib
from quickdraw import npy_files
from quickdraw import splits
from quickdraw.categories import Category
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError

CONNECTIONS = 16
# Rows apart that one request still covers: 4 rows are 3 KB, cheaper than a
# round trip.
MAX_GAP_ROWS = 4
# Rows gathered before they are written as one cache entry.
ENTRY_ROWS = 4096
PROBE_BYTES = 1024
ATTEMPTS = 5
BACKOFF_S = 0.25
TIMEOUT_S = 60.0
_ENTRY = re.compile(r"^(\d+)-(\d+)-([0-9a-f]{16})\.npz$")


class RangeIgnored(Exception):
  """The server answered a Range request with the whole file (200)."""


class _Retry(Exception):
  """A failure worth another attempt (5xx, dropped or short answer)."""


@dataclasses.dataclass(frozen=True)
class RowFile:
  """A category's rows in use, from the row cache: what `DrawingFile` is
  for a whole local file, for `QuickDrawSource`.

  Attributes:
    category: The official category name.
    path: The cache folder.
    num_rows: Rows in the official file.
    rows: The rows held, ascending (int64).
    drawings: uint8 (len(rows), 784), in `rows` order.
    sha256: The official file's sha256 (the rows' identity).
  """
  category: str
  path: str
  num_rows: int
  rows: np.ndarray
  drawings: np.ndarray
  sha256: str

  def __len__(self) -> int:
    return self.num_rows

  def identity(self) -> str:
    return f"rows of {self.sha256}"

  def read_rows(self, rows: np.ndarray) -> np.ndarray:
    """uint8 (len(rows), 784) for rows that are held."""
    rows = np.asarray(rows, np.int64)
    at = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
    if len(rows) and not np.array_equal(self.rows[at], rows):
      raise QuickDrawError(f"{self.path}: rows of {self.category!r} asked "
                           "for are not cached; run again with --download")
    return self.drawings[at]


def cache_dir(data_dir: str, category: Category) -> str:
  return os.path.join(data_dir, category.filename[:-len(".npy")] + ".rows")


class RowCache:
  """The fetched rows of one category (see the module's docstring)."""

  def __init__(self, data_dir: str, category: Category):
    self.category = category
    self.folder = cache_dir(data_dir, category)

  def meta(self) -> dict | None:
    """The file's {"size", "sha256", "header_len", "num_rows"}, if cached
    for the same official record."""
    try:
      with open(os.path.join(self.folder, "meta.json")) as f:
        meta = json.load(f)
    except (OSError, ValueError):
      return None
    if (meta.get("size") != self.category.size
        or meta.get("sha256") != self.category.sha256):
      return None
    return meta

  def write_meta(self, header_len: int, num_rows: int) -> None:
    atomic_files.write_text(os.path.join(self.folder, "meta.json"), json.dumps(
        {"category": self.category.name, "size": self.category.size,
         "sha256": self.category.sha256, "header_len": header_len,
         "num_rows": num_rows}, indent=2) + "\n")

  def load(self) -> tuple[np.ndarray, np.ndarray]:
    """Every good entry's (rows ascending, drawings); bad ones are deleted
    with a one-line notice."""
    rows, drawings = [], []
    try:
      names = sorted(os.listdir(self.folder))
    except OSError:
      names = []
    for name in names:
      match = _ENTRY.match(name)
      if not match:
        continue
      path = os.path.join(self.folder, name)
      entry = _read_entry(path, int(match[2]), match[3])
      if entry is None:
        logging.warning("%s: a corrupt row cache entry; deleted, its rows "
                        "are fetched again", path)
        try:
          os.unlink(path)
        except OSError:
          pass
        continue
      rows.append(entry[0])
      drawings.append(entry[1])
    if not rows:
      return np.empty(0, np.int64), np.empty((0, npy_files.PIXELS), np.uint8)
    rows, drawings = np.concatenate(rows), np.concatenate(drawings)
    rows, first = np.unique(rows, return_index=True)
    return rows, drawings[first]

  def add(self, rows: np.ndarray, drawings: np.ndarray) -> None:
    """Writes one entry, by rename."""
    order = np.argsort(rows)
    rows = np.ascontiguousarray(rows[order], np.int64)
    drawings = np.ascontiguousarray(drawings[order], np.uint8)
    name = f"{rows[0]}-{len(rows)}-{_digest(rows, drawings)}.npz"
    path = os.path.join(self.folder, name)
    with atomic_files.disk_full_is_an_error(
        os.path.dirname(self.folder), f"rows of {self.category.name!r}",
        drawings.nbytes), atomic_files.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, rows=rows, drawings=drawings)


def _digest(rows: np.ndarray, drawings: np.ndarray) -> str:
  return hashlib.sha256(rows.tobytes() + drawings.tobytes()).hexdigest()[:16]


def _read_entry(path: str, count: int, digest: str
                ) -> tuple[np.ndarray, np.ndarray] | None:
  try:
    with np.load(path, allow_pickle=False) as entry:
      rows, drawings = entry["rows"], entry["drawings"]
  except Exception:  # truncated or garbled: zipfile, numpy or OS errors
    return None
  if (rows.dtype != np.int64 or drawings.dtype != np.uint8
      or rows.shape != (count,) or drawings.shape != (count, npy_files.PIXELS)
      or _digest(rows, drawings) != digest):
    return None
  return rows, drawings


class _Client:
  """GET with a Range header over one kept-alive connection per thread."""

  def __init__(self, timeout_s: float = TIMEOUT_S):
    self._local = threading.local()
    self._timeout_s = timeout_s
    self.requests = 0
    self.bytes = 0
    self._lock = threading.Lock()

  def _connection(self, parts) -> http.client.HTTPConnection:
    key = (parts.scheme, parts.netloc)
    conns = getattr(self._local, "conns", None)
    if conns is None:
      conns = self._local.conns = {}
    if key not in conns:
      cls = (http.client.HTTPSConnection if parts.scheme == "https"
             else http.client.HTTPConnection)
      conns[key] = cls(parts.netloc, timeout=self._timeout_s)
    return conns[key]

  def _drop(self, parts) -> None:
    conn = getattr(self._local, "conns", {}).pop(
        (parts.scheme, parts.netloc), None)
    if conn is not None:
      conn.close()

  def get_range(self, url: str, start: int, stop: int) -> tuple[bytes, int]:
    """Bytes [start, stop) of `url` and the file's total length, retried
    with back-off on dropped connections and 5xx answers.

    Raises:
      RangeIgnored: the server answered 200.
      QuickDrawError: a 4xx answer, or the attempts ran out.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for attempt in range(ATTEMPTS):
      try:
        conn = self._connection(parts)
        conn.request("GET", target, headers={
            "Range": f"bytes={start}-{stop - 1}",
            "Accept-Encoding": "identity"})
        response = conn.getresponse()
        if response.status == 200:
          self._drop(parts)  # never read the whole file's body
          raise RangeIgnored()
        body = response.read()
        with self._lock:
          self.requests += 1
          self.bytes += len(body)
        if response.status >= 500:
          raise _Retry(f"HTTP {response.status} {response.reason}")
        if response.status != 206:
          raise QuickDrawError(
              f"HTTP {response.status} {response.reason}")
        total = _content_range(response.getheader("Content-Range", ""),
                               start, stop)
        if len(body) != stop - start:
          raise _Retry(f"{len(body)} bytes of {stop - start}")
        return body, total
      except (_Retry, OSError, http.client.HTTPException) as e:
        self._drop(parts)
        if attempt == ATTEMPTS - 1:
          reason = getattr(e, "strerror", None) or e
          raise QuickDrawError(f"{reason}") from None
        time.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")

  def close(self) -> None:
    for conn in getattr(self._local, "conns", {}).values():
      conn.close()


def _content_range(value: str, start: int, stop: int) -> int:
  match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", value.strip())
  if not match or (int(match[1]), int(match[2])) != (start, stop - 1):
    raise _Retry(f"Content-Range {value!r} for bytes {start}-{stop - 1}")
  return int(match[3])


def parse_header(head: bytes) -> tuple[int, int]:
  """(header length, rows) of an `.npy` file of (N, 784) uint8 from its
  first bytes."""
  f = io.BytesIO(head)
  try:
    version = np.lib.format.read_magic(f)
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = reader(f)
  except Exception as e:
    raise QuickDrawError(f"not an .npy header ({e})") from None
  if (len(shape) != 2 or shape[1] != npy_files.PIXELS or fortran
      or dtype != np.uint8):
    raise QuickDrawError(f"shape {shape} {dtype}, not (N, 784) uint8")
  return f.tell(), int(shape[0])


class Progress(download_lib.Progress):
  """One line for the whole fetch: rows, bytes, requests, rate."""

  def __init__(self, total_rows: int, client: _Client, categories: int,
               stream: TextIO | None = None):
    super().__init__(f"rows of {categories} categories", total_rows, stream)
    self._client = client

  def _line(self, done: int, now: float) -> str:
    seconds = max(now - self._start, 1e-6)
    return (f"Fetching {self._label}: {done:,}/{self._total:,} rows, "
            f"{self._client.bytes / 1e6:.1f} MB in {self._client.requests:,} "
            f"requests, {self._client.bytes / seconds / 1e6:.1f} MB/s")


def coalesce(rows: np.ndarray, max_gap: int = MAX_GAP_ROWS
             ) -> list[tuple[int, int]]:
  """Ascending rows -> [first, stop) runs, joining runs at most `max_gap`
  rows apart."""
  if not len(rows):
    return []
  breaks = np.flatnonzero(np.diff(rows) > max_gap + 1)
  firsts = np.concatenate([[rows[0]], rows[breaks + 1]])
  lasts = np.concatenate([rows[breaks], [rows[-1]]])
  return [(int(a), int(b) + 1) for a, b in zip(firsts, lasts)]


@dataclasses.dataclass
class _Plan:
  category: Category
  url: str
  cache: RowCache
  header_len: int = 0
  num_rows: int = 0
  needed: np.ndarray | None = None


def answers_ranges(category: Category, config: DataConfig,
                   timeout_s: float = 5.0) -> bool:
  """Whether `category`'s file can be fetched by row now: an http(s) URL
  whose server answers one short Range request, once, without retries
  (so an offline machine finds out in one try, not in back-offs)."""
  url = _url(category, config)
  parts = urllib.parse.urlsplit(url)
  if parts.scheme not in ("http", "https"):
    return False
  try:
    client = _Client(timeout_s)
    conn = client._connection(parts)
    conn.request("GET", parts.path, headers={"Range": "bytes=0-0",
                                             "Accept-Encoding": "identity"})
    response = conn.getresponse()
    if response.status == 206:
      response.read()
    client.close()
    return response.status == 206
  except (OSError, http.client.HTTPException):
    return False


def _url(category: Category, config: DataConfig) -> str:
  return download_lib.category_url(category,
                                   config.download_base_url or None)


def _fetch_error(category: Category, url: str, reason, data_dir: str) -> str:
  return (f"could not fetch rows of {category.name!r} from {url}: {reason} "
          "(offline?); check the connection or pass --download_base_url for "
          f"a mirror, or {download_lib._manual_hint(category, data_dir)}")


def open_sampled(records: Sequence[Category], config: DataConfig,
                 progress_stream: TextIO | None = None
                 ) -> list[RowFile | None]:
  """The rows a sampled run uses of categories not on disk, from the row
  cache, fetching what it lacks.

  Returns:
    Per record: its RowFile, or None where the whole file is wanted
    instead (every row used, a `file://` mirror, no cache and no
    `--download`, or a server that ignores Range, said in one line).

  Raises:
    QuickDrawError: a server that fails, or answers with the wrong size or
      header; the message names the URL.
  """
  if config.samples_per_class <= 0 or not records:
    return [None] * len(records)
  plans: list[_Plan | None] = []
  for record in records:
    plan = _Plan(record, _url(record, config),
                 RowCache(config.data_dir, record))
    meta = plan.cache.meta()
    if meta:
      plan.header_len, plan.num_rows = meta["header_len"], meta["num_rows"]
    remote = urllib.parse.urlsplit(plan.url).scheme in ("http", "https")
    plans.append(plan if meta or (config.download and remote) else None)

  client = _Client()
  try:
    _probe([p for p in plans if p and not p.num_rows], client, config)
  except RangeIgnored:
    print(f"quickdraw: {config.download_base_url or 'the server'} ignores "
          "Range requests; downloading whole files (verified by sha256) "
          "instead", file=progress_stream or sys.stderr)
    plans = [p if p and p.num_rows else None for p in plans]
  held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
  for i, plan in enumerate(plans):
    if plan is None or splits.uses_all_rows(config.samples_per_class,
                                            plan.num_rows):
      plans[i] = None
      continue
    plan.needed = splits.sample_rows(config.seed, plan.category.name,
                                     plan.num_rows, config.samples_per_class)
    held[i] = plan.cache.load()
  missing = {i: np.setdiff1d(plans[i].needed, held[i][0])
             for i in held}
  missing = {i: m for i, m in missing.items() if len(m)}
  if missing and not config.download:
    for i in missing:
      plans[i] = None  # the caller names the missing file, as without cache
  elif missing:
    _fetch({i: (plans[i], m) for i, m in missing.items()}, client,
           config, progress_stream)
    for i in missing:
      held[i] = plans[i].cache.load()
  client.close()

  out = []
  for i, plan in enumerate(plans):
    if plan is None:
      out.append(None)
      continue
    rows, drawings = held[i]
    keep = np.isin(rows, plan.needed)
    out.append(RowFile(plan.category.name, plan.cache.folder, plan.num_rows,
                       rows[keep], drawings[keep], plan.category.sha256))
  return out


def _probe(plans: Sequence[_Plan], client: _Client,
           config: DataConfig) -> None:
  """Reads each file's header and total length, concurrently; records
  them in the plans and the caches' meta.json."""

  def probe(plan: _Plan) -> None:
    try:
      head, total = client.get_range(plan.url, 0, PROBE_BYTES)
    except QuickDrawError as e:
      raise QuickDrawError(_fetch_error(plan.category, plan.url, e,
                                        config.data_dir)) from None
    if total != plan.category.size:
      raise QuickDrawError(
          f"{plan.url} is {total} bytes, not the official "
          f"{plan.category.size}: not the official file; pass "
          "--download_base_url for a faithful mirror")
    try:
      header_len, num_rows = parse_header(head)
    except QuickDrawError as e:
      raise QuickDrawError(f"{plan.url}: {e}; not the official file") from None
    if header_len + num_rows * npy_files.PIXELS != total:
      raise QuickDrawError(
          f"{plan.url}: its header's {num_rows} rows do not fill its "
          f"{total} bytes; not the official file")
    plan.header_len, plan.num_rows = header_len, num_rows
    plan.cache.write_meta(header_len, num_rows)

  with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
    for future in [pool.submit(probe, p) for p in plans]:
      future.result()


def _fetch(work: dict[int, tuple[_Plan, np.ndarray]], client: _Client,
           config: DataConfig, progress_stream: TextIO | None) -> None:
  """Fetches the missing rows, writing cache entries as rows arrive."""
  requests = [(i, first, stop) for i, (plan, rows) in work.items()
              for first, stop in coalesce(rows)]
  total_rows = sum(len(rows) for _, rows in work.values())
  pending: dict[int, list[tuple[int, bytes]]] = {i: [] for i in work}
  remaining = {i: 0 for i in work}
  for i, _, _ in requests:
    remaining[i] += 1
  progress = Progress(total_rows, client, len(work), progress_stream)
  done = 0

  def get(i: int, first: int, stop: int) -> tuple[int, int, bytes]:
    plan = work[i][0]
    offset = plan.header_len + first * npy_files.PIXELS
    try:
      body, total = client.get_range(plan.url, offset,
                                     plan.header_len + stop * npy_files.PIXELS)
    except RangeIgnored:
      raise QuickDrawError(f"{plan.url} stopped answering Range requests; "
                           "run again") from None
    except QuickDrawError as e:
      raise QuickDrawError(_fetch_error(plan.category, plan.url, e,
                                        config.data_dir)) from None
    if total != plan.category.size:
      raise QuickDrawError(f"{plan.url} changed size ({total} bytes); run "
                           "again")
    return i, first, body

  def flush(i: int) -> None:
    if not pending[i]:
      return
    rows = np.concatenate([np.arange(first, first + len(body) //
                                     npy_files.PIXELS) for first, body in
                           pending[i]])
    drawings = np.frombuffer(b"".join(body for _, body in pending[i]),
                             np.uint8).reshape(-1, npy_files.PIXELS)
    work[i][0].cache.add(rows, drawings)
    pending[i] = []

  pool = concurrent.futures.ThreadPoolExecutor(CONNECTIONS)
  try:
    futures = [pool.submit(get, *r) for r in requests]
    for future in concurrent.futures.as_completed(futures):
      i, first, body = future.result()
      pending[i].append((first, body))
      remaining[i] -= 1
      wanted = work[i][1]
      done += int(np.count_nonzero(
          (wanted >= first) &
          (wanted < first + len(body) // npy_files.PIXELS)))
      progress.update(done)
      if (remaining[i] == 0 or sum(len(b) for _, b in pending[i])
          >= ENTRY_ROWS * npy_files.PIXELS):
        flush(i)
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
    progress.close()
    # Rows that arrived before a failure or Ctrl-C are whole: keep them, so
    # that the rerun fetches only the rest.
    for i in pending:
      try:
        flush(i)
      except (QuickDrawError, OSError):
        pass
