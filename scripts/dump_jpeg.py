"""Write drawings as JPEG files per category; see quickdraw/cli/dump_jpeg.py."""

from quickdraw.cli.dump_jpeg import run

if __name__ == "__main__":
  run()
