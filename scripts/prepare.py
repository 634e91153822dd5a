"""Fetch, check and split QuickDraw categories; see quickdraw/cli/prepare.py."""

from quickdraw.cli.prepare import run

if __name__ == "__main__":
  run()
