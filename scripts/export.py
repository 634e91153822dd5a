"""Export a trained run; see quickdraw/cli/export.py."""

from quickdraw.cli.export import run

if __name__ == "__main__":
  run()
