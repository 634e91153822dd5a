"""Draw and see the app's model answer; see quickdraw/cli/demo.py."""

from quickdraw.cli.demo import run

if __name__ == "__main__":
  run()
