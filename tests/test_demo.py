"""quickdraw-demo: the server's answers and errors, and the page in a real
headless Chromium, drawn on with pointer events."""

import concurrent.futures
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from quickdraw import demo, synthetic
from quickdraw.errors import QuickDrawError

from conftest import CATEGORIES, REPO, export_stand_in

CANVAS = 128


@pytest.fixture(scope="module")
def run_dir(stand_in, tmp_path_factory):
  """A run folder exported from the stand-in CNN of the generated classes."""
  folder = tmp_path_factory.mktemp("demo_run")
  export_stand_in(stand_in, folder, drawings=50, canvas_size=CANVAS,
                  check_canvases=20)
  return folder


@pytest.fixture(scope="module")
def server(run_dir):
  classifier = demo.Classifier(str(run_dir / "model_canvas.tflite"))
  httpd = demo.make_server(classifier, "127.0.0.1", 0)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
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


def test_parallel_requests_each_get_their_own_answer(server):
  canvases = [(c, synthetic.render_canvas(c, 256, 20, 150, (128, 128),
                                          seed=s))
              for c in range(len(CATEGORIES)) for s in range(4)]

  def classify(item):
    class_id, canvas = item
    status, body = request(server, "POST", "/classify", png(canvas))
    return class_id, status, json.loads(body)["top"][0]["category"]

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(classify, canvases))
  assert all(status == 200 for _, status, _ in results)
  assert all(CATEGORIES[c] == name for c, _, name in results)


def test_the_model_must_be_a_canvas_model(run_dir):
  with pytest.raises(QuickDrawError) as e:
    demo.Classifier(str(run_dir / "model.tflite"))
  assert "takes drawings, not canvases" in str(e.value)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_the_command_prints_its_url_and_stops_cleanly_on_ctrl_c(run_dir,
                                                                 stop):
  process = subprocess.Popen(
      [sys.executable, "-m", "quickdraw.cli.demo", f"--output_dir={run_dir}",
       "--port=0"], env=dict(os.environ, PYTHONPATH=REPO),
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y "
           "chromium chromium-driver; .ci/run installs them)")
def test_drawing_in_a_real_browser(server, tmp_path):
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
      actions = ActionBuilder(driver, mouse=PointerInput("pen", "pen"))
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
    assert (tmp_path / "demo.png").stat().st_size > 1000
    # A phone-sized viewport: the page still fits, without sideways scroll.
    driver.set_window_size(390, 844)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390
  finally:
    driver.quit()
