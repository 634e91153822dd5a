"""The data configuration: one frozen object holding every default.

Entry points define their flags with these defaults, so there is one place to
change them; the library takes a `DataConfig` and never reads flags.
"""

from __future__ import annotations

import dataclasses
import os

from quickdraw.errors import QuickDrawError

DEFAULT_DATA_DIR = os.path.join("~", ".keras", "datasets", "quickdraw")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What data to read and how to split it.

  Attributes:
    categories: Official category names, in model output order.
    data_dir: Folder holding `<category>.npy` files; missing ones are
      downloaded into it.
    download: Whether missing files may be downloaded.
    download_base_url: A mirror to download from instead of Google's
      storage (`http(s)://` or `file://`); empty for the official URLs.
    samples_per_class: Drawings used per category, across all splits; 0 for
      every row of every file.
    validation_percentage: Percent of drawings in the validation split.
    testing_percentage: Percent of drawings in the test split.
    seed: Seeds sampling, the split and shuffling.
    image_size: Side of the square RGB images fed to the backbone.
  """
  categories: tuple[str, ...] = ()
  data_dir: str = DEFAULT_DATA_DIR
  download: bool = True
  download_base_url: str = ""
  samples_per_class: int = 1000
  validation_percentage: float = 10.0
  testing_percentage: float = 10.0
  seed: int = 0
  image_size: int = 224

  def __post_init__(self):
    object.__setattr__(self, "categories", tuple(self.categories))
    object.__setattr__(self, "data_dir",
                       os.path.expanduser(os.fspath(self.data_dir)))
    if self.samples_per_class < 0:
      raise QuickDrawError(
          f"--samples_per_class={self.samples_per_class} is negative; pass a "
          "count, or 0 for every drawing")
    for name in ("validation_percentage", "testing_percentage"):
      value = getattr(self, name)
      if not 0 <= value < 100:
        raise QuickDrawError(
            f"--{name}={value} is outside [0, 100); pass a percentage")
    if self.validation_percentage + self.testing_percentage >= 100:
      raise QuickDrawError(
          f"--validation_percentage={self.validation_percentage} plus "
          f"--testing_percentage={self.testing_percentage} leave no training "
          "drawings; keep their sum under 100")
    if self.image_size < 32:
      raise QuickDrawError(
          f"--image_size={self.image_size} is below 32, the smallest input "
          "Keras' backbones take; pass 0 for the --architecture's own size")
