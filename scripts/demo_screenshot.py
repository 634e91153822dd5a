"""Draws on quickdraw-demo's page in headless Chromium: the README's picture
and the page's response time per drawing update.

  python scripts/demo_screenshot.py --model=runs/quickstart/model_canvas.tflite \\
      --figure=7 --screenshot=docs/demo.png

Starts the demo's server on --model, opens the page in Debian's Chromium
(through chromium-driver and selenium, from the test extra), draws
generated figure --figure (quickdraw/synthetic.py: 0 circle, 1 square,
2 triangle, 7 star, ...) with pen pointer events, saves the page and
prints the response times the page measured for each update.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import numpy as np
from absl import flags

from quickdraw import demo
from quickdraw.testing import synthetic
from quickdraw.cli import common
from quickdraw.errors import QuickDrawError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The canvas .tflite to answer with.")
flags.DEFINE_integer("figure", 7, "Generated figure to draw.", lower_bound=0)
flags.DEFINE_string("screenshot", "docs/demo.png", "Where the PNG goes.")
flags.DEFINE_integer("width", 860, "Browser window width.", lower_bound=320)
flags.DEFINE_integer("height", 800, "Browser window height.",
                     lower_bound=320)


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    from selenium import webdriver
    from selenium.webdriver.common.actions.action_builder import (
        ActionBuilder)
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
  except ImportError:
    raise QuickDrawError("needs selenium: pip install -e '.[test]'") from None
  browser, driver_path = shutil.which("chromium"), shutil.which(
      "chromedriver")
  if not (browser and driver_path):
    raise QuickDrawError("needs Debian's chromium and chromium-driver: "
                         "apt-get install -y chromium chromium-driver")
  server = demo.make_server(demo.Classifier(FLAGS.model), "127.0.0.1", 0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  options = webdriver.ChromeOptions()
  options.binary_location = browser
  for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-background-networking", "--no-first-run",
                   f"--window-size={FLAGS.width},{FLAGS.height}"):
    options.add_argument(argument)
  driver = webdriver.Chrome(
      service=webdriver.ChromeService(executable_path=driver_path),
      options=options)
  try:
    driver.get("http://%s:%d/" % server.server_address[:2])
    time.sleep(1.0)
    pad = driver.find_element(By.ID, "pad")
    size = pad.size["width"]
    actions = ActionBuilder(driver, mouse=PointerInput("pen", "pen"))
    for line in synthetic.figure_strokes(FLAGS.figure):
      points = [(int(x * 0.33 * size), int(y * 0.33 * size))
                for x, y in line]
      actions.pointer_action.move_to(pad, *points[0])
      actions.pointer_action.pointer_down()
      for x, y in points[1:]:
        actions.pointer_action.move_to(pad, x, y)
      actions.pointer_action.pointer_up()
    actions.perform()
    time.sleep(2.0)
    times = driver.execute_script("return window.answerTimes || []")
    driver.save_screenshot(FLAGS.screenshot)
  finally:
    driver.quit()
    server.shutdown()
  print("answer times, in order (ms):", [round(t) for t in times])
  print(f"Wrote {FLAGS.screenshot}; {len(times)} updates answered in "
        f"{np.median(times):.0f} ms median (min {min(times):.0f}, max "
        f"{max(times):.0f}), measured by the page from request to answer")


if __name__ == "__main__":
  common.run_app(main, "__main__")
