"""Train a doodle classifier; see quickdraw/cli/train.py."""

from quickdraw.cli.train import run

if __name__ == "__main__":
  run()
