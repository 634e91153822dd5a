"""quickdraw-demo: the server's answers and errors, and the page in a real
headless Chromium, drawn on with pointer events."""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf

from quickdraw import collect, demo
from quickdraw.testing import synthetic
from quickdraw.errors import QuickDrawError

from conftest import (CATEGORIES, REPO, export_stand_in, run_command,
                      serve_in_background, smoke_args)

CANVAS = 128


@pytest.fixture(scope="module")
def run_dir(stand_in, tmp_path_factory):
  """A run folder exported from the stand-in CNN of the generated classes."""
  folder = tmp_path_factory.mktemp("demo_run")
  export_stand_in(stand_in, folder, drawings=50, canvas_size=CANVAS,
                  check_canvases=20)
  return folder


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
  """The folder the module's server collects drawings into."""
  return tmp_path_factory.mktemp("collected") / "drawings"


@pytest.fixture(scope="module")
def server(run_dir, collected):
  classifier = demo.Classifier(str(run_dir / "model_canvas.tflite"))
  httpd = demo.make_server(classifier, "127.0.0.1", 0,
                           collector=collect.Collector(str(collected)))
  serve_in_background(httpd)
  yield httpd
  httpd.shutdown()
  httpd.server_close()


def request(server, method, path, body=None, headers=None):
  connection = http.client.HTTPConnection(*server.server_address[:2],
                                          timeout=30)
  connection.request(method, path, body=body, headers=headers or {})
  response = connection.getresponse()
  data = response.read()
  connection.close()
  return response.status, data


def png(picture):
  return tf.io.encode_png(picture).numpy()


def test_classify_answers_with_the_app_model(server):
  for class_id, name in enumerate(CATEGORIES):
    canvas = synthetic.render_canvas(class_id, 400, 30, 250, (200, 200))
    status, body = request(server, "POST", "/classify", png(canvas))
    answer = json.loads(body)
    assert status == 200 and answer["top"][0]["category"] == name
    assert len(answer["top"]) == 3 and not answer["blank"]
    assert len(answer["drawing"]) == 784 and max(answer["drawing"]) == 255
  status, body = request(server, "GET", "/info")
  info = json.loads(body)
  assert info["categories"] == list(CATEGORIES)
  assert info["model"] == "model_canvas.tflite"
  assert info["canvas"] == [CANVAS, CANVAS]
  status, body = request(server, "GET", "/")
  assert status == 200 and b"<canvas id=\"pad\"" in body
  assert b"http://" not in body and b"https://" not in body  # nothing remote


def test_a_blank_canvas_is_no_guess(server):
  status, body = request(server, "POST", "/classify",
                         png(np.full((300, 300, 3), 255, np.uint8)))
  answer = json.loads(body)
  assert status == 200 and answer["blank"] and answer["top"] == []


@pytest.mark.parametrize("method, path, body, headers, status, reason", [
    ("POST", "/classify", b"not an image", {}, 400, "not a PNG or JPEG"),
    ("POST", "/classify", b"", {}, 400, "not a PNG or JPEG"),
    ("POST", "/classify", None,
     {"Content-Length": str(demo.MAX_BODY_BYTES + 1)}, 413,
     "over the limit of"),
    ("GET", "/classify", None, {}, 405, "use POST"),
    ("PUT", "/classify", b"x", {}, 405, "PUT is not served"),
    ("POST", "/elsewhere", b"x", {}, 404, "POST a PNG to /classify"),
    ("GET", "/elsewhere", None, {}, 404, "no such page"),
])
def test_bad_requests_get_a_reason_and_the_server_goes_on(
    server, method, path, body, headers, status, reason):
  got, data = request(server, method, path, body, headers)
  assert got == status
  message = json.loads(data)["error"]
  assert reason in message and "\n" not in message
  canvas = synthetic.render_canvas(1, 200, 16, 120, (100, 100))
  ok, _ = request(server, "POST", "/classify", png(canvas))
  assert ok == 200


def raw_request(server, data: bytes, half_close: bool = True):
  """Sends `data` as it is (headers written by hand); (status, headers,
  JSON body)."""
  with socket.create_connection(server.server_address[:2], timeout=20) as s:
    s.sendall(data)
    if half_close:
      s.shutdown(socket.SHUT_WR)  # no more body is coming
    response = http.client.HTTPResponse(s)
    response.begin()
    return response.status, dict(response.getheaders()), json.loads(
        response.read())


def _post_head(length: str) -> bytes:
  return (f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png"
          f"\r\nContent-Length: {length}\r\n\r\n").encode()


def _png_header(width, height, rest=b""):
  """A PNG's signature and IHDR chunk (grey, 8 bits) for any size."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr +
          struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + rest)


def _png(width, height):
  """A whole, valid grey PNG of zeros, compressed a row at a time (a
  20000x20000 one is 400 MB decoded, about 400 KB here)."""
  compressor = zlib.compressobj(9)
  row = b"\0" * (width + 1)  # filter byte, then the pixels
  data = b"".join(compressor.compress(row) for _ in range(height))
  data += compressor.flush()
  idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(
      ">I", zlib.crc32(b"IDAT" + data))
  iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I",
                                                       zlib.crc32(b"IEND"))
  return _png_header(width, height, idat + iend)


def _rss_mb():
  with open("/proc/self/status") as f:
    line = next(l for l in f if l.startswith("VmRSS"))
  return int(line.split()[1]) / 1024


def _still_answers(server):
  canvas = synthetic.render_canvas(1, 200, 16, 120, (100, 100))
  status, body = request(server, "POST", "/classify", png(canvas))
  assert status == 200 and json.loads(body)["top"][0]["category"] == (
      CATEGORIES[1])


@pytest.mark.parametrize("length", ["-5", "abc", "1e3", "12, 12", " "])
def test_a_bad_content_length_is_refused_at_once(server, length):
  status, _, answer = raw_request(server, _post_head(length) + b"x")
  assert status == 400 and "not a number of bytes" in answer["error"]
  _still_answers(server)


def test_a_body_shorter_than_its_content_length_is_refused(server,
                                                          monkeypatch):
  status, _, answer = raw_request(server, _post_head("1000") + b"\x89PNG")
  assert status == 400 and "ended after 4 of the 1000 bytes" in (
      answer["error"])
  # A client that says more than it sends and then waits gets the same
  # answer once the body's time is up.
  monkeypatch.setattr(demo, "BODY_TIMEOUT_S", 0.5)
  status, _, answer = raw_request(server, _post_head("1000") + b"\x89PNG",
                                  half_close=False)
  assert status == 400 and "ended after" in answer["error"]
  _still_answers(server)


PICTURES = {
    "60000x8": (lambda: _png(60000, 8), 413, "over the limit"),
    "4097x4097": (lambda: _png(4097, 4097), 413, "over the limit"),
    "no_size": (lambda: _png(0, 10), 400, "not a PNG or JPEG"),
    "header_only": (lambda: _png_header(64, 64), 400, "not a PNG or JPEG"),
    "bad_ihdr": (lambda: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRgarbage", 400,
                 "not a PNG or JPEG"),
    "bad_jpeg": (lambda: b"\xff\xd8\xff\xe0 not really a jpeg", 400,
                 "not a PNG or JPEG"),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_a_picture_too_large_or_corrupt_is_refused_by_its_header(server,
                                                                  name):
  make, status, reason = PICTURES[name]
  picture = make()
  got, _, answer = raw_request(
      server, _post_head(str(len(picture))) + picture)
  assert got == status and reason in answer["error"]
  _still_answers(server)


def test_a_20000_pixel_png_is_refused_without_decoding(server):
  bomb = _png(20000, 20000)
  assert len(bomb) < demo.MAX_BODY_BYTES  # a small body
  before = _rss_mb()
  start = time.perf_counter()
  status, _, answer = raw_request(server, _post_head(str(len(bomb))) + bomb)
  seconds = time.perf_counter() - start
  grown = _rss_mb() - before
  assert status == 413 and "400000000 pixels, over the limit" in (
      answer["error"])
  assert grown < 100, f"the server grew by {grown:.0f} MB"
  assert seconds < 5
  _still_answers(server)


def test_classifications_beyond_the_cap_get_503(run_dir):
  classifier = demo.Classifier(str(run_dir / "model_canvas.tflite"))
  entered, release = threading.Event(), threading.Event()
  answer = classifier.classify

  def slow(picture):
    entered.set()
    release.wait(30)
    return answer(picture)

  classifier.classify = slow
  httpd = demo.make_server(classifier, "127.0.0.1", 0, max_in_flight=1)
  serve_in_background(httpd)
  canvas = png(synthetic.render_canvas(1, 200, 16, 120, (100, 100)))
  try:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      first = pool.submit(request, httpd, "POST", "/classify", canvas)
      assert entered.wait(30)
      status, headers, busy = raw_request(
          httpd, _post_head(str(len(canvas))) + canvas)
      assert status == 503 and headers["Retry-After"] == "1"
      assert "busy" in busy["error"]
      release.set()
      assert first.result(30)[0] == 200
    assert request(httpd, "POST", "/classify", canvas)[0] == 200
  finally:
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_parallel_requests_each_get_their_own_answer(server):
  canvases = [(c, synthetic.render_canvas(c, 256, 20, 150, (128, 128),
                                          seed=s))
              for c in range(len(CATEGORIES)) for s in range(4)]

  def classify(item):
    class_id, canvas = item
    status, body = request(server, "POST", "/classify", png(canvas))
    return class_id, status, json.loads(body)["top"][0]["category"]

  # As many at once as the server takes (more get 503: see below).
  with concurrent.futures.ThreadPoolExecutor(demo.MAX_IN_FLIGHT) as pool:
    results = list(pool.map(classify, canvases))
  assert all(status == 200 for _, status, _ in results)
  assert all(CATEGORIES[c] == name for c, _, name in results)


# Figures the generated classes do not use: a user's own kinds of drawing.
OWN = {"zigzag": 4, "my logo": 5}


def own_canvas(class_id, seed):
  rng = np.random.default_rng([seed, class_id])
  size = int(rng.choice([256, 400, 512]))
  extent = size * rng.uniform(0.4, 0.7)
  return synthetic.render_canvas(class_id, size, extent * rng.uniform(
      0.08, 0.12), extent, (size / 2, size / 2), seed=seed)


def test_collect_saves_labelled_canvases_and_refuses_bad_labels(
    server, collected):
  canvas = own_canvas(4, 0)
  status, body = request(server, "POST", "/collect?label=my%20logo",
                         png(canvas))
  answer = json.loads(body)
  assert status == 200 and answer["label"] == "my logo"
  saved = collected / answer["saved"]
  assert saved.parent == collected / "my logo" and saved.suffix == ".png"
  np.testing.assert_array_equal(tf.io.decode_png(saved.read_bytes()), canvas)
  assert answer["counts"]["my logo"] >= 1
  info = json.loads(request(server, "GET", "/info")[1])
  assert info["collect"]["my logo"] == answer["counts"]["my logo"]
  before = sorted(p for p in collected.parent.rglob("*"))
  for label, reason in (("..%2Fescape", "letters, digits"),
                        ("a%2Fb", "letters, digits"),
                        (".hidden", "letters, digits"),
                        ("%00x", "letters, digits"),
                        ("", "give the drawing a label"),
                        ("x" * 65, "keep it to 64")):
    status, body = request(server, "POST", f"/collect?label={label}",
                           png(canvas))
    assert status == 400 and reason in json.loads(body)["error"], label
  assert request(server, "POST", "/collect?label=ok",
                 b"not a picture")[0] == 400
  # The body's size is checked before a byte of it is read.
  status, _, error = raw_request(server, _post_head(
      str(demo.MAX_BODY_BYTES + 1)).replace(b"/classify", b"/collect?label=ok"))
  assert status == 413 and "over the limit" in error["error"]
  big = png(np.zeros((5000, 5000, 3), np.uint8))  # over MAX_PIXELS
  assert request(server, "POST", "/collect?label=ok", big)[0] == 413
  assert sorted(p for p in collected.parent.rglob("*")) == before
  assert request(server, "GET", "/collect")[0] == 405


def test_an_unwritable_collect_dir_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(QuickDrawError) as e:
    collect.Collector(str(tmp_path / "file" / "sub"))
  assert str(e.value) == (f"cannot write to --collect_dir {tmp_path}/file/sub"
                          f": {tmp_path}/file is a file, not a folder; pass "
                          "a writable folder")


def test_a_server_without_a_collection_refuses_to_collect(run_dir):
  httpd = demo.make_server(
      demo.Classifier(str(run_dir / "model_canvas.tflite")), "127.0.0.1", 0)
  serve_in_background(httpd)
  try:
    status, body = request(httpd, "POST", "/collect?label=x", b"x")
    assert status == 404 and "POST a PNG to /classify" in json.loads(body)[
        "error"]
    assert json.loads(request(httpd, "GET", "/info")[1])["collect"] is None
    assert request(httpd, "GET", "/collect")[0] == 404  # no such page here
  finally:
    httpd.shutdown()
    httpd.server_close()


def test_collected_drawings_train_and_the_app_model_knows_them(
    server, collected, data_dir, tmp_path):
  """The README's walk-through: drawings saved on the page, then
  quickdraw-train --image_dir beside QuickDraw categories; the app's model
  in MediaPipe answers the user's own kinds."""
  pytest.importorskip("mediapipe", reason="mediapipe is in the test "
                      "extra: pip install -e '.[test]'")
  from test_android import classifier_for, mediapipe_top1
  for label, class_id in OWN.items():
    for seed in range(30):
      quoted = label.replace(" ", "%20")
      status, _ = request(server, "POST", f"/collect?label={quoted}",
                          png(own_canvas(class_id, seed)))
      assert status == 200
  out = tmp_path / "run"
  status, stderr = run_command(
      "train", *smoke_args(data_dir, tmp_path, out, tiny=True),
      "--categories=circle,square", f"--image_dir={collected}",
      "--class_weight=balanced", "--other_categories=none",
      f"--android_assets_dir={out / 'assets'}")
  assert status == 0, stderr
  labels = (out / "assets" / "labels.txt").read_text().split("\n")[:4]
  assert labels == ["circle", "square", "my logo", "zigzag"]
  app = classifier_for(out / "assets" / "model.tflite")
  for label, class_id in OWN.items():
    right = sum(mediapipe_top1(app, own_canvas(class_id, seed)).category_name
                == label for seed in range(100, 110))
    print(f"{label}: {right} of 10 fresh canvases right in MediaPipe")
    assert right >= 8, (label, right)


def test_the_model_must_be_a_canvas_model(run_dir):
  with pytest.raises(QuickDrawError) as e:
    demo.Classifier(str(run_dir / "model.tflite"))
  assert "takes drawings, not canvases" in str(e.value)


@pytest.mark.parametrize("stop, host", [("SIGINT", "127.0.0.1"),
                                        ("SIGTERM", "0.0.0.0")])
def test_the_command_prints_its_url_and_stops_cleanly_on_ctrl_c(run_dir,
                                                                 stop, host):
  process = subprocess.Popen(
      [sys.executable, "-m", "quickdraw.cli.demo", f"--output_dir={run_dir}",
       "--port=0", f"--host={host}"], env=dict(os.environ, PYTHONPATH=REPO),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()
    assert line.startswith(f"Serving {run_dir}/model_canvas.tflite")
    url = line.split(" at ")[1].split()[0]
    assert url.startswith("http://127.0.0.1:")
    # Ctrl-C, or a plain kill; also when the test runs as a background job,
    # whose children start with SIGINT ignored.
    process.send_signal(getattr(subprocess.signal, stop))
    out, err = process.communicate(timeout=30)
  finally:
    process.kill()
  assert process.returncode == 0, err
  assert "Stopped." in out and "Traceback" not in err
  # Listening beyond this machine is said once, on one line.
  warnings = [l for l in err.splitlines() if "reachable by anyone" in l]
  assert len(warnings) == (host == "0.0.0.0")
  if warnings:
    assert ": warning: --host=0.0.0.0 makes the page" in warnings[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y "
           "chromium chromium-driver; .ci/run installs them)")
def test_drawing_in_a_real_browser(server, collected, tmp_path):
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.common.actions.action_builder import ActionBuilder
  from selenium.webdriver.common.actions.pointer_input import PointerInput
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync",
                   "--no-first-run", "--window-size=1000,800"):
    options.add_argument(argument)
  driver = webdriver.Chrome(
      service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
      options=options)
  try:
    host, port = server.server_address[:2]
    driver.get(f"http://{host}:{port}/")
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "model").text)
    assert driver.find_element(By.ID, "model").text == "model_canvas.tflite"
    items = driver.find_elements(By.CSS_SELECTOR, "#categories li")
    assert [i.text for i in items] == list(CATEGORIES)
    pad = driver.find_element(By.ID, "pad")
    # A pen thick enough for the generated classes' strokes.
    driver.execute_script(
        "document.getElementById('pen').value = 40;")
    for class_id in (0, 2):  # a circle, then a triangle
      driver.find_element(By.ID, "clear").click()
      answers = int(driver.execute_script(
          "return Number(document.body.dataset.answers || 0)"))
      # 20 ms a move (Selenium's default is 250 ms: a circle's 50 points
      # took 13 s), still as pointer events the page handles one by one.
      actions = ActionBuilder(driver, mouse=PointerInput("pen", "pen"),
                              duration=20)
      size = pad.size["width"]
      for line in synthetic.figure_strokes(class_id):
        # Offsets from the pad's centre: the figure spans 70% of it.
        points = [(int(x * 0.35 * size), int(y * 0.35 * size))
                  for x, y in line]
        actions.pointer_action.move_to(pad, *points[0])
        actions.pointer_action.pointer_down()
        for x, y in points[1:]:
          actions.pointer_action.move_to(pad, x, y)
        actions.pointer_action.pointer_up()
      actions.perform()
      WebDriverWait(driver, 30).until(lambda d: int(d.execute_script(
          "return Number(document.body.dataset.answers || 0)")) > answers)
      # Answers arrive while drawing; the last one is for the whole figure.
      shown = lambda d: d.execute_script(
          "return Array.from(document.querySelectorAll('#answers .name'))"
          ".map((e) => e.textContent)")
      try:
        WebDriverWait(driver, 15).until(
            lambda d: (shown(d) or [None])[0] == CATEGORIES[class_id])
      except Exception:
        pass
      top = shown(driver)
      assert top[0] == CATEGORIES[class_id], top
      assert len(top) == 3
    seen = driver.execute_script(
        "const c = document.getElementById('seen').getContext('2d');"
        "return Array.from(c.getImageData(0, 0, 28, 28).data)"
        ".filter((v, i) => i % 4 === 0).reduce((a, b) => a + b, 0);")
    assert seen > 0  # the 28x28 drawing is shown
    driver.save_screenshot(str(tmp_path / "demo.png"))
    # Saved under a label (--collect_dir): the canvas lands in its folder.
    before = len(list((collected / "my triangle").glob("*.png")))
    driver.find_element(By.ID, "label").send_keys("my triangle")
    driver.find_element(By.ID, "save").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_element(
        By.ID, "saved").text.startswith("saved my triangle/"))
    saved = sorted((collected / "my triangle").glob("*.png"))
    assert len(saved) == before + 1
    picture = tf.io.decode_png(saved[-1].read_bytes()).numpy()
    assert picture.shape[:2] == (512, 512) and picture.min() == 0
    assert "my triangle" in driver.find_element(By.ID, "collected").text
    assert (tmp_path / "demo.png").stat().st_size > 1000
    # A phone-sized viewport: the page still fits, without sideways scroll.
    driver.set_window_size(390, 844)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390
    # ... and the answers sit above the canvas, seen while drawing.
    answers = driver.find_element(By.ID, "answers").rect
    pad = driver.find_element(By.ID, "pad").rect
    assert answers["y"] + answers["height"] <= pad["y"]
    # No request the server answers 404 (a favicon, say).
    logs = [e["message"] for e in driver.get_log("browser")]
    assert not any("404" in m for m in logs), logs
  finally:
    driver.quit()


def test_a_browser_that_closes_mid_answer_is_dropped_quietly():
  """The page closed while its answer was on the way: no traceback."""
  handler_class = demo.make_handler(classifier=None)
  handler = handler_class.__new__(handler_class)

  class Closed:
    def write(self, data):
      raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
      pass

  handler.wfile = Closed()
  handler.request_version = "HTTP/1.1"
  handler.requestline = "POST /classify HTTP/1.1"
  handler.command = "POST"
  handler.close_connection = False
  handler._json(200, {"top": []})  # raises nothing
  assert handler.close_connection
