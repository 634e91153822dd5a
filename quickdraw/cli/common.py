"""Flags and error handling shared by every entry point.

Flags are defined here once (absl flags are global, so two commands that both
define `--data_dir` could not be imported together) and take their defaults
from `DataConfig`, the one place where defaults live.
"""

from __future__ import annotations

import dataclasses
import functools
import logging as std_logging
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from quickdraw import backbones
from quickdraw import categories as categories_lib
from quickdraw import image_folders
from quickdraw import model as model_lib
from quickdraw.config import DEFAULT_DATA_DIR, DataConfig, TrainConfig
from quickdraw.errors import QuickDrawError
from quickdraw.export import FINAL_TENSOR_NAME

FLAGS = flags.FLAGS
_DEFAULTS = DataConfig()


class PathParser(flags.ArgumentParser):
  """A path flag's value: `~` and `$VARIABLES` expanded as it is parsed.

  In one place, so that no command can forget it: a shell leaves `~`
  alone after `=` (`--output_dir=~/runs`), and a folder literally named
  `~` is one `rm -rf ~` away from a lost home.
  """
  syntactic_help = "a path; ~ and $VARIABLES are expanded"

  def parse(self, argument):
    if argument is None:
      return None
    return os.path.expandvars(os.path.expanduser(str(argument)))

  def flag_type(self) -> str:
    return "path"


class _PathFlag(flags.Flag):
  """Shows a default under the home folder as `~/...` in --help."""

  def _get_parsed_value_as_string(self, value):
    home = os.path.expanduser("~")
    if isinstance(value, str) and value.startswith(home + os.sep):
      value = "~" + value[len(home):]
    return super()._get_parsed_value_as_string(value)


def DEFINE_path(name: str, default: str | None, help: str,  # noqa: N802
                **args) -> flags.FlagHolder:
  """A string flag for a file or folder (see `PathParser`)."""
  return flags.DEFINE_flag(_PathFlag(PathParser(), flags.ArgumentSerializer(),
                                     name, default, help, **args))

flags.DEFINE_list(
    "categories", [],
    "Official QuickDraw category names, comma-separated, in the order of the "
    "model's outputs; quote names with spaces: --categories=cat,dog,"
    "\"smiley face\". See --list_categories.")
DEFINE_path(
    "categories_file", None,
    "A text file with one category name per line (# starts a comment); used "
    "instead of --categories.")
DEFINE_path(
    "data_dir", DEFAULT_DATA_DIR,
    "Folder with <category>.npy (or full_numpy_bitmap_<category>.npy) files, "
    "shape (N, 784) uint8. Missing categories are downloaded into it.")
flags.DEFINE_boolean(
    "download", _DEFAULTS.download,
    "Download missing category files from the official storage (verified "
    "against tensorflow-datasets' sha256). --nodownload forbids it.")
flags.DEFINE_string(
    "download_base_url", _DEFAULTS.download_base_url,
    "Download from this mirror (http://, https:// or file:// folder holding "
    "<category>.npy) instead of Google's storage.")
flags.DEFINE_integer(
    "samples_per_class", _DEFAULTS.samples_per_class,
    "Drawings used per category, over all splits (the old recipe used 1000); "
    "0 uses every drawing.", lower_bound=0)
flags.DEFINE_float(
    "validation_percentage", _DEFAULTS.validation_percentage,
    "Percent of each category's drawings held out for validation.")
flags.DEFINE_float(
    "testing_percentage", _DEFAULTS.testing_percentage,
    "Percent of each category's drawings held out for the final test.")
flags.DEFINE_string(
    "other_categories", _DEFAULTS.other_categories,
    "Categories the model should answer 'not sure' to (doodles of other "
    "things): with --other_share, most join the training batches, trained "
    "to score 'none of these'; a quarter are held out to measure the score "
    "threshold (and place it, with --unknown_recall). Default: every "
    "official category not in --categories, 10,000 drawings spread over "
    "them (32 of each of 335: 8.4 MB), fetched by range requests; with "
    "--nodownload, or offline, the other .npy files in --data_dir (at most "
    "100 drawings of each). 'none' for none, or names, comma-separated.")
DEFINE_path(
    "image_dir", _DEFAULTS.image_dir,
    "retrain.py's flag: a folder of class folders of pictures (PNG, JPEG, "
    "GIF, BMP, WebP, at any depth), each named for its label. Every picture "
    "becomes a drawing by the app model's canvas preprocessing. A folder "
    "named for one of --categories adds to it; the others are classes of "
    "their own, after --categories (which may be empty). Split by a hash "
    "of each picture's path; nothing in the folder is written.")
flags.DEFINE_integer(
    "min_images_per_class", _DEFAULTS.min_images_per_class,
    "With --image_dir: fewest usable pictures a class folder may have.",
    lower_bound=1)
flags.DEFINE_integer(
    "seed", _DEFAULTS.seed,
    "Seeds which drawings are sampled, the split, and the shuffle.")
flags.DEFINE_string(
    "architecture", TrainConfig.architecture,
    "The backbone, with Keras' ImageNet weights: "
    f"{backbones.names_help()}. MobileNet v1 keeps retrain.py's names "
    "(mobilenet_1.0_224); the sizes are the ones Keras publishes weights "
    "for. The default is the quickstart's; compared with the others in "
    "scripts/README.md (accuracy, size, latency).")
flags.DEFINE_integer(
    "image_size", 0,
    "Side of the RGB images fed to the backbone; 0 takes the size from "
    "--architecture. Another size runs the architecture's weights at that "
    "size (configs/accurate.flags fine-tunes 224 px weights at 128).",
    lower_bound=0)
DEFINE_path(
    "output_dir", TrainConfig.output_dir,
    "Folder for what a run writes: model, labels, evaluation, pictures.")
flags.DEFINE_string(
    "final_tensor_name", FINAL_TENSOR_NAME,
    "Name of the output node in the frozen graph (retrain.py's flag).")
# The flagfiles shipped inside the package (the checkout's configs/ is a
# link to them), found by name from any folder.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs")
flags.DEFINE_string(
    "config", None,
    "A flagfile shipped with quickdraw, by name, from any folder: "
    "quickstart, accurate, retrain_compat or smoke (read where it stands, "
    "like --flagfile; later flags override it). --flagfile=configs/NAME.flags "
    "finds them from any folder too.")
flags.DEFINE_boolean(
    "list_categories", False,
    "Print the 345 official category names and exit.")


def category_names_from_flags() -> list[str]:
  """The names from --categories_file if given, else --categories."""
  if FLAGS.categories_file:
    if FLAGS.categories:
      raise QuickDrawError(
          "pass --categories or --categories_file, not both")
    return categories_lib.read_categories_file(FLAGS.categories_file)
  return list(FLAGS.categories)


def every_category_in_data_dir_unless_chosen() -> None:
  """For benchmarks: with no --categories or --categories_file, every
  `<category>.npy` file in --data_dir."""
  if not FLAGS.categories and not FLAGS.categories_file:
    FLAGS.categories = sorted(
        os.path.splitext(f)[0]
        for f in os.listdir(os.path.expanduser(FLAGS.data_dir))
        if f.endswith(".npy"))


def data_config_from_flags() -> DataConfig:
  """Builds the `DataConfig` the data flags describe.

  Raises:
    QuickDrawError: a flag value is out of range, or the category names are
      not official.
  """
  names = category_names_from_flags()
  # Check the names and the folder now, so a typo fails before anything
  # slow starts.
  if FLAGS.image_dir:
    image_folders.class_names(FLAGS.image_dir)
  if names or not FLAGS.image_dir:
    categories_lib.resolve_categories(names)
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(DataConfig)
            if f.name not in ("categories", "image_size")}
  image_size = (FLAGS.image_size or
                model_lib.parse_architecture(FLAGS.architecture).image_size)
  return DataConfig(categories=tuple(names), image_size=image_size, **values)


def list_categories_or_check_args(argv: Sequence[str]) -> bool:
  """What every command's `main` does first.

  Returns:
    True when --list_categories printed the names (the command is done).

  Raises:
    QuickDrawError: positional arguments were given (one line, not absl's
      usage dump: most often the rest of an unquoted name with a space).
  """
  if len(argv) > 1:
    raise QuickDrawError(
        f"unexpected arguments: {' '.join(argv[1:])}; quote category names "
        "with spaces (--categories=cat,dog,\"smiley face\") and flag "
        "values with spaces (see --help)")
  if FLAGS.list_categories:
    for name in categories_lib.official_categories():
      print(name)
    return True
  return False


def guarded(main: Callable[[Sequence[str]], None]) -> Callable[..., None]:
  """Wraps an absl `main` so user errors print one line, not a traceback.

  `QuickDrawError` becomes `<program>: error: <message>` on stderr and exit
  status 1; Ctrl-C becomes a hint to re-run (work already written is kept)
  and status 130.
  """

  @functools.wraps(main)
  def wrapper(argv):
    program = program_name()
    plain_log_lines(program)
    try:
      main(argv)
    except QuickDrawError as e:
      print(f"{program}: error: {e}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      print(f"{program}: interrupted; run the same command again to go on "
            "from where it stopped", file=sys.stderr)
      sys.exit(130)

  return wrapper


class _PlainFormatter(std_logging.Formatter):
  """A log record as a sentence: warnings and errors say so."""

  def __init__(self, program: str):
    super().__init__()
    self._program = program

  def format(self, record: std_logging.LogRecord) -> str:
    message = record.getMessage()
    if record.levelno >= std_logging.WARNING:
      return f"{self._program}: warning: {message}"
    return message


def plain_log_lines(program: str) -> None:
  """Log lines without absl's prefix (`I1202 16:15:45.470101 1403...
  training.py:342]`), which reads as noise to a user; it is kept with
  --verbosity=1 or more, and in --log_dir files."""
  if FLAGS.verbosity >= 1 or FLAGS.log_dir:
    return
  logging.get_absl_handler().setFormatter(_PlainFormatter(program))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with errors in the commands' one-line form.

  absl prints `FATAL Flags parsing error: ...` and a help hint; every other
  error of ours reads `<command>: error: ...`, so flag errors do too. Its
  message is kept whole, "Did you mean" suggestions included.
  """
  try:
    return FLAGS(with_configs(argv))
  except (flags.Error, QuickDrawError) as e:
    message = " ".join(str(e).split())
    print(f"{program_name()}: error: {message} (see --help)",
          file=sys.stderr)
    sys.exit(1)


def shipped_configs() -> list[str]:
  """The names of the flagfiles in CONFIG_DIR."""
  return sorted(n[:-len(".flags")] for n in os.listdir(CONFIG_DIR)
                if n.endswith(".flags"))


def with_configs(argv: list[str]) -> list[str]:
  """`argv` with each `--config=NAME` turned into the shipped flagfile, in
  its place, and a `--flagfile=.../configs/NAME.flags` that does not exist
  here (the README's, run outside the checkout) pointed at the shipped one.

  Raises:
    QuickDrawError: --config names no shipped config.
  """
  out, args = list(argv[:1]), list(argv[1:])
  while args:
    arg = args.pop(0)
    name = None
    if arg in ("--config", "-config") and args:
      name = args.pop(0)
    elif arg.startswith(("--config=", "-config=")):
      name = arg.split("=", 1)[1]
    if name is not None:
      name = name[:-len(".flags")] if name.endswith(".flags") else name
      if name not in shipped_configs():
        raise QuickDrawError(
            f"--config={name}: no such config; use one of "
            f"{', '.join(shipped_configs())}, or --flagfile=FILE")
      arg = f"--flagfile={os.path.join(CONFIG_DIR, name + '.flags')}"
    elif arg.startswith("--flagfile="):
      path = os.path.expanduser(arg.split("=", 1)[1])
      shipped = os.path.join(CONFIG_DIR, os.path.basename(path))
      if (not os.path.exists(path) and os.path.basename(os.path.dirname(
          path)) == "configs" and os.path.exists(shipped)):
        arg = f"--flagfile={shipped}"
    out.append(arg)
  return out


def markdown_row(cells: Sequence[object]) -> str:
  """A row of a Markdown table, as the benchmarks print their figures for
  scripts/README.md."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def program_name() -> str:
  return os.path.basename(sys.argv[0]) or "quickdraw"


def progress_verbosity() -> int:
  """Keras' verbose for progress: bars on a terminal (1), one line per
  epoch (2) when output goes to a file or pipe, where a bar's redraws
  would fill it with control codes."""
  return 1 if sys.stdout.isatty() else 2


def run_app(main: Callable[[Sequence[str]], None], module_name: str) -> None:
  """Runs `main` under absl with `guarded` errors and a useful `--help`.

  absl's `--help` lists the key flags of the module named by `sys.argv[0]`,
  which for a console script or `scripts/*.py` is a thin wrapper; make the
  command module's key flags (its own and the adopted data flags) its too.
  """
  for flag in FLAGS.get_key_flags_for_module(module_name):
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  # absl lists --flagfile (one of its special flags) only under
  # --helpfull; every command takes one.
  from absl.flags import _helpers  # the special flags' one home
  FLAGS.register_key_flag_for_module(sys.argv[0],
                                     _helpers.SPECIAL_FLAGS["flagfile"])
  # absl prints the __main__ module's docstring as the usage text.
  sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
  app.run(guarded(main), flags_parser=parse_flags)
