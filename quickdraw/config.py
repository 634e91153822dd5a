"""The run's settings: `DataConfig` (which drawings, split how) and
`TrainConfig` (which model, trained how), frozen objects holding every default.

Entry points define their flags with these defaults, so there is one place to
change them; the library takes these objects and never reads flags.
"""

from __future__ import annotations

import dataclasses
import os

from quickdraw import backbones, distribute
from quickdraw.errors import QuickDrawError

DEFAULT_DATA_DIR = os.path.join("~", ".keras", "datasets", "quickdraw")
DEFAULT_BOTTLENECK_DIR = os.path.join("~", ".keras", "quickdraw_bottlenecks")
HEAD_SCHEDULES = ("constant", "cosine", "hold_cosine")
CLASS_WEIGHTS = ("none", "balanced")


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
    other_categories: Categories the model should answer "not sure" to
      (`others`): "" for a sample of official names not chosen (with
      `download`; else the data folder's other files), "none", or names,
      comma-separated.
    image_dir: A folder of class folders of pictures (retrain.py's
      --image_dir; `image_folders`), "" for none: a folder named for a
      chosen category adds to it, the others are classes after
      `categories` (which may then be empty).
    min_images_per_class: Fewest usable pictures an image_dir class may
      have.
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
  other_categories: str = ""
  image_dir: str = ""
  min_images_per_class: int = 20

  def __post_init__(self):
    object.__setattr__(self, "categories", tuple(self.categories))
    for name in ("data_dir", "image_dir"):
      object.__setattr__(self, name,
                         os.path.expanduser(os.fspath(getattr(self, name))))
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to build, train, evaluate and save the classifier.

  Attributes:
    architecture: The backbone (`backbones`): retrain.py's
      `mobilenet_<alpha>_<size>`, `mobilenet_v2_<alpha>_<size>`,
      `mobilenet_v3_small_<size>`, ... The default, MobileNetV2 1.0, is
      the quickstart's (README.md, "Backbones", says why).
    weights: "imagenet", "none" (random init, for tests), or a path to the
      architecture's Keras no-top `.h5` weights.
    model_dir: Keras' cache folder for downloaded weights; "" for `~/.keras`.
    bottleneck_dir: The bottleneck cache, shared by runs.
    output_dir: Where the model, labels, report and checkpoints go.
    summaries_dir: TensorBoard logs; "" for `<output_dir>/logs`.
    epochs: Passes over the training split for the head.
    how_many_training_steps: retrain.py's name: if above 0, train the head
      for this many batches instead (rounded up to whole epochs).
    train_batch_size: Drawings per training batch.
    learning_rate: Adam's learning rate for the head (its initial one
      under a decaying `head_schedule`).
    head_schedule: "constant"; "cosine": decaying to zero along a cosine
      over the head's steps; "hold_cosine": held for two thirds of them,
      then a cosine to zero (scripts/README.md, "bench_head_defaults.py",
      has the measurements behind the default).
    label_smoothing: Share of each target spread evenly over the classes
      (Szegedy et al. 2016): the model is not pushed to certainty on
      drawings that look alike, and its scores are less overconfident.
    dropout: Dropout rate before the head's dense layer.
    junk_share: Junk pictures (`outliers`: noise, gradients, textures,
      scribbles, text through the canvas preprocessing) added to each
      training batch, as a share of its drawings, with the none class as
      their target (`losses.softmax_with_none`): the model learns to give
      them no confident answer, so an app's score threshold turns them
      away. 0 trains on drawings alone.
    other_share: Doodles of other categories (`others`, chosen by
      `DataConfig.other_categories`), as QuickDraw drew them and re-drawn
      with a pen, added to each training batch, as a share of its
      drawings, with the none class as their target: the model learns to
      answer them "not sure". 0 for none (they still measure the
      threshold).
    mix_share: Mixes of two training drawings' bottleneck features
      (`outliers.add_mixes`: 30% to 70% of one, the rest of the other)
      added to each batch of the frozen head's training, as a share of its
      drawings, with the none class as their target when the two differ in
      class: the space between the classes, where doodles of other things
      tend to fall, learns "not sure". On the quality gate's `retrain`
      (three seeds), 0.2 raised unseen categories' doodles refused from
      42% to 48% at the default threshold, and test calibration error
      from 0.040 to 0.081 (scripts/README.md, "Other categories"). 0 for
      none.
    redraw_share: Training drawings drawn again with a pen of random width
      and size on an app canvas of a random theme, read back by the app
      model's canvas preprocessing (`redraws`), added to each training
      batch with their labels, as a share of its drawings; the pool holds
      this share of the training split. The app's canvases have other
      strokes than QuickDraw's bitmaps: on the quality gate, 0.5 raised
      canvas top-1 by 4.6 points (v1 0.25, 10 categories) and 7.6 (V2
      0.5, 22; scripts/README.md, "bench_redraws.py"). 0 for bitmaps
      alone.
    fine_tune_layers: Top backbone layers with trainable weights
      (`backbones.fine_tune_candidates`: convolutions and dense layers,
      never batch norm) to unfreeze after the head has trained; 0 skips
      fine-tuning.
    fine_tune_learning_rate: Adam's peak learning rate while fine-tuning,
      reached after a warm-up over the first 5% of its steps; it then
      decays to zero along a cosine.
    fine_tune_epochs: Passes over the training images while fine-tuning.
    fine_tune_augment: Random rotations, zooms and shifts of the training
      drawings while fine-tuning only. Images flow through the backbone
      then anyway, so it costs little, and the head keeps its cache.
    fine_tune_mixes: Mixes (`mix_share`) while the backbone trains too
      (fine-tuning, `augment`): the model mixes the features it makes and
      only the head learns from them (`model.build_mixing_trainer`; on
      one replica). With the accuracy recipe on 10 categories it refused
      4 more points of unseen categories' doodles (two seeds) for about
      0.003 to 0.01 of test calibration error (scripts/README.md, "Mixes
      between the classes"); configs/accurate.flags turns it on, the
      default stays off until other setups are measured.
    augment: Random rotations, zooms and shifts of training drawings, for
      the head and fine-tuning; bypasses the bottleneck cache.
    min_accuracy: Fail, saving no model, if test top-1 is below this.
    class_weight: "none", or "balanced": each training drawing weighs
      N / (classes * its class's count) in the loss (scikit-learn's
      rule), so that a class of 50 pictures beside QuickDraw's thousands
      is not drowned out.
    upsample: Where drawings are upsampled (and augmented) when images flow
      into the model (fine-tuning, augmentation): "host" in tf.data,
      "device" in the model's first layer on the accelerator, "auto" device
      when a GPU is present. Bottlenecks always upsample in their compiled
      forward pass.
    output_labels: Labels file; "" for `<output_dir>/retrained_labels.txt`.
    output_graph: Frozen graph path (written by the export step); "" for
      `<output_dir>/retrained_graph.pb`.
    strategy: "default", "mirrored", "multi_worker" or "tpu" (see
      `distribute`); `train_batch_size` is the global batch.
    tpu: The TPU's name or grpc:// address, for `strategy="tpu"`.
    mixed_precision: Compute in float16 (float32 weights and softmax), for
      GPUs with tensor cores; saved and exported models are float32.
    verbose: 1 shows Keras progress bars; 2 one line per epoch; 0 nothing.
    train_seed: Seeds the weights' initialisation, dropout, the order of
      the head's training batches and the junk drawn into them; -1 for the
      data's seed. The drawings and their split stay the data's: runs that
      differ only here measure how much training alone moves a figure.
  """
  architecture: str = "mobilenet_v2_1.0_224"
  weights: str = "imagenet"
  model_dir: str = ""
  bottleneck_dir: str = DEFAULT_BOTTLENECK_DIR
  output_dir: str = os.path.join("runs", "quickdraw")
  summaries_dir: str = ""
  epochs: int = 30
  how_many_training_steps: int = 0
  train_batch_size: int = 100
  learning_rate: float = 0.001
  head_schedule: str = "hold_cosine"
  label_smoothing: float = 0.1
  dropout: float = 0.2
  junk_share: float = 0.1
  other_share: float = 0.2
  mix_share: float = 0.2
  redraw_share: float = 0.5
  fine_tune_layers: int = 0
  fine_tune_learning_rate: float = 1e-4
  fine_tune_epochs: int = 2
  fine_tune_augment: bool = False
  fine_tune_mixes: bool = False
  augment: bool = False
  min_accuracy: float = 0.0
  class_weight: str = "none"
  upsample: str = "auto"
  output_labels: str = ""
  output_graph: str = ""
  strategy: str = "default"
  tpu: str = ""
  mixed_precision: bool = False
  verbose: int = 1
  train_seed: int = -1

  def __post_init__(self):
    backbones.parse_architecture(self.architecture)  # fails early if bad
    for name in ("epochs", "how_many_training_steps", "fine_tune_layers",
                 "fine_tune_epochs"):
      if getattr(self, name) < 0:
        raise QuickDrawError(f"--{name}={getattr(self, name)} is negative")
    if self.epochs == 0 and self.how_many_training_steps == 0:
      raise QuickDrawError(
          "--epochs=0 trains nothing; pass --epochs or "
          "--how_many_training_steps")
    if self.train_batch_size < 1:
      raise QuickDrawError(
          f"--train_batch_size={self.train_batch_size}; pass at least 1")
    for name in ("learning_rate", "fine_tune_learning_rate"):
      if not getattr(self, name) > 0:
        raise QuickDrawError(f"--{name}={getattr(self, name)}; pass a "
                             "positive rate such as 0.001")
    if not 0 <= self.dropout < 1:
      raise QuickDrawError(f"--dropout={self.dropout} is outside [0, 1)")
    if not 0 <= self.other_share <= 1:
      raise QuickDrawError(f"--other_share={self.other_share} is outside "
                           "[0, 1]; pass a share of the batch, such as 0.2")
    if not 0 <= self.mix_share <= 1:
      raise QuickDrawError(f"--mix_share={self.mix_share} is outside "
                           "[0, 1]; pass a share such as 0.2, or 0 for none")
    if not 0 <= self.redraw_share <= 1:
      raise QuickDrawError(f"--redraw_share={self.redraw_share} is outside "
                           "[0, 1]; pass a share such as 0.5, or 0 for none")
    if not 0 <= self.junk_share <= 1:
      raise QuickDrawError(f"--junk_share={self.junk_share} is outside "
                           "[0, 1]; pass a share such as 0.1, or 0 for none")
    if not 0 <= self.label_smoothing < 1:
      raise QuickDrawError(f"--label_smoothing={self.label_smoothing} is "
                           "outside [0, 1); pass a share such as 0.1")
    if self.strategy not in distribute.STRATEGIES:
      raise QuickDrawError(f"--strategy={self.strategy}; use one of "
                           f"{', '.join(distribute.STRATEGIES)}")
    if self.head_schedule not in HEAD_SCHEDULES:
      raise QuickDrawError(f"--head_schedule={self.head_schedule}; use "
                           f"{' or '.join(HEAD_SCHEDULES)}")
    if self.class_weight not in CLASS_WEIGHTS:
      raise QuickDrawError(f"--class_weight={self.class_weight}; use "
                           f"{' or '.join(CLASS_WEIGHTS)}")
    if self.upsample not in ("auto", "host", "device"):
      raise QuickDrawError(
          f"--upsample={self.upsample}; use auto, host or device")
    if not 0 <= self.min_accuracy <= 1:
      raise QuickDrawError(
          f"--min_accuracy={self.min_accuracy} is outside [0, 1]; pass a "
          "fraction such as 0.85")

  def seed_for(self, data: DataConfig) -> int:
    """The seed of training's own randomness (`train_seed`)."""
    return data.seed if self.train_seed < 0 else self.train_seed

  def path(self, name: str) -> str:
    """`output_labels`, `output_graph` or `summaries_dir`, defaults filled."""
    return output_path(self.output_dir, name, getattr(self, name))


# Where the path settings point when left empty, inside --output_dir.
_DEFAULT_NAMES = {"output_labels": "retrained_labels.txt",
                  "output_graph": "retrained_graph.pb",
                  "output_tflite": "model.tflite", "summaries_dir": "logs"}


def output_path(output_dir: str, name: str, value: str = "") -> str:
  """The path setting `name` ("output_labels", "output_graph",
  "output_tflite" or "summaries_dir"): `value`, or its default file in
  `output_dir` when `value` is empty."""
  if value:
    return os.path.expanduser(value)
  return os.path.join(output_dir, _DEFAULT_NAMES[name])
