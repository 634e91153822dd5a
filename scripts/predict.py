"""Classify doodles with an exported model; see quickdraw/cli/predict.py."""

from quickdraw.cli.predict import run

if __name__ == "__main__":
  run()
