"""Training and evaluation of a doodle classifier, start to finish.

`train_and_evaluate(data, config)` is the whole job behind `quickdraw-train`:

1. Open the data and build the frozen backbone (weights fetched if needed).
2. Train the head. Without augmentation it trains on the bottleneck cache:
   each drawing's features are computed once, and every epoch after the
   first, and every later run on the same data, skips the backbone. With
   augmentation the drawings change every epoch, so (as retrain.py's
   distortions did) it runs the frozen backbone on every batch instead.
3. Optionally fine-tune: unfreeze the top backbone layers (batch norm stays
   in inference mode) and train on images at a small learning rate.
4. Evaluate on the test split, write the report, apply the accuracy gate,
   and save the Keras model and labels.

Every epoch ends with a checkpoint, so a killed run started again with the
same settings resumes at the next epoch with the same data order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from quickdraw import (atomic_files, bottlenecks, checkpoints, distribute,
                       evaluation, inference, input_pipeline, outliers,
                       preprocessing, visualize)
from quickdraw import export as export_lib
from quickdraw import model as model_lib
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

DEFAULT_BOTTLENECK_DIR = os.path.join("~", ".keras", "quickdraw_bottlenecks")
MODEL_FILENAME = "model.keras"
RUN_FILENAME = "run.json"  # the run's settings: {"data", "train", ...}
HELD_OUT_DRAWINGS = 1000  # calibration and int8's float layers use these
_MISCLASSIFIED_SHOWN = 64
HEAD_SCHEDULES = ("constant", "cosine", "hold_cosine")


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
      training batch, as a share of its drawings, with a uniform target:
      the model learns to give them no confident answer, so an app's
      score threshold turns them away. 0 trains on drawings alone.
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
    augment: Random rotations, zooms and shifts of training drawings, for
      the head and fine-tuning; bypasses the bottleneck cache.
    min_accuracy: Fail, saving no model, if test top-1 is below this.
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
  fine_tune_layers: int = 0
  fine_tune_learning_rate: float = 1e-4
  fine_tune_epochs: int = 2
  fine_tune_augment: bool = False
  augment: bool = False
  min_accuracy: float = 0.0
  upsample: str = "auto"
  output_labels: str = ""
  output_graph: str = ""
  strategy: str = "default"
  tpu: str = ""
  mixed_precision: bool = False
  verbose: int = 1
  train_seed: int = -1

  def __post_init__(self):
    model_lib.parse_architecture(self.architecture)  # fails early if bad
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


@dataclasses.dataclass
class TrainResult:
  """What a run produced.

  Attributes:
    classifier: The trained Keras model, images in its backbone's input
      range -> probabilities.
    report: The test split's `evaluation.classification_report`.
    epochs_run: Epochs trained by this call, per phase ("head",
      "fine_tune"); fewer than configured when it resumed.
    bottlenecks_computed: Splits whose bottlenecks this call computed.
    export_report: The export's checks, when it exported.
    chief: False on a non-chief worker, whose files went to a scratch
      folder that is gone (the chief wrote the run's files).
  """
  classifier: keras.Model
  report: dict
  epochs_run: dict[str, int]
  bottlenecks_computed: list[str]
  export_report: dict | None = None
  chief: bool = True


def upsample_on_device(upsample: str) -> bool:
  """Resolves `TrainConfig.upsample`: "auto" means device iff a GPU exists."""
  if upsample == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return upsample == "device"


def head_schedule(num_train: int, config: TrainConfig,
                  drop_remainder: bool = False) -> tuple[int, int]:
  """(epochs, steps per epoch) for the head.

  An epoch is one pass over the training split; `how_many_training_steps`
  is rounded up to whole epochs so that every epoch sees every drawing once
  (all but the remainder, with `drop_remainder`).
  """
  steps = input_pipeline.batches_per_epoch(num_train, config.train_batch_size,
                                           drop_remainder)
  if config.how_many_training_steps:
    return math.ceil(config.how_many_training_steps / steps), steps
  return config.epochs, steps


def head_learning_rate(config: TrainConfig, total_steps: int
                       ) -> float | keras.optimizers.schedules.LearningRateSchedule:
  """The head's learning rate over its steps (`TrainConfig.head_schedule`).

  Decaying to zero lets the last epochs settle instead of bouncing around
  at the full rate; decaying from the first step halves what a short run
  learns (at 10 epochs a v1 head lost 2 points of canvas top-1 to it).
  Holding the rate first does both (scripts/README.md has the table).
  """
  rate = config.learning_rate
  total_steps = max(1, total_steps)
  if config.head_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(rate, total_steps)
  if config.head_schedule == "hold_cosine":
    # Held for the first two thirds (a "warm-up" from the rate to itself),
    # then a cosine to zero over the last third.
    hold = (2 * total_steps) // 3
    return keras.optimizers.schedules.CosineDecay(
        rate, max(1, total_steps - hold), warmup_target=rate,
        warmup_steps=hold)
  return rate


def fingerprint(data: DataConfig, config: TrainConfig) -> str:
  """Identifies what a run trains; checkpoints resume only a run like it."""
  shaping = {k: v for k, v in dataclasses.asdict(data).items()
             if k not in ("download", "download_base_url", "data_dir")}
  shaping.update({k: v for k, v in dataclasses.asdict(config).items()
                  if k not in ("model_dir", "bottleneck_dir", "output_dir",
                               "summaries_dir", "min_accuracy",
                               "output_labels", "output_graph", "tpu",
                               "verbose")})
  return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()
                        ).hexdigest()[:16]


@keras.saving.register_keras_serializable(package="quickdraw")
class SparseCrossentropy(keras.losses.Loss):
  """Cross-entropy of class indices with label smoothing (Keras' sparse
  cross-entropy has no smoothing, and one-hot labels would cost every
  pipeline a change). A label of `outliers.JUNK_LABEL` has a uniform
  target."""

  def __init__(self, label_smoothing: float = 0.0,
               name: str = "sparse_crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.label_smoothing = label_smoothing

  def call(self, y_true, y_pred):
    classes = keras.ops.shape(y_pred)[-1]
    labels = keras.ops.cast(keras.ops.reshape(y_true, (-1, 1)), "int32")
    targets = keras.ops.where(
        labels == outliers.JUNK_LABEL,
        keras.ops.ones_like(y_pred) / keras.ops.cast(classes, y_pred.dtype),
        keras.ops.one_hot(labels[:, 0], classes, dtype=y_pred.dtype))
    return keras.losses.categorical_crossentropy(
        targets, y_pred, label_smoothing=self.label_smoothing)

  def get_config(self):
    return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="quickdraw")
class DrawingAccuracy(keras.metrics.SparseCategoricalAccuracy):
  """Top-1 over the drawings of a batch: junk (`outliers`) has no right
  answer, and counting it wrong would pull training accuracy down by the
  junk's share."""

  def __init__(self, name: str = "accuracy", **kwargs):
    super().__init__(name=name, **kwargs)

  def update_state(self, y_true, y_pred, sample_weight=None):
    drawing = keras.ops.cast(
        keras.ops.reshape(y_true, (-1,)) != outliers.JUNK_LABEL, "float32")
    if sample_weight is not None:
      drawing = drawing * keras.ops.cast(
          keras.ops.reshape(sample_weight, (-1,)), "float32")
    return super().update_state(y_true, y_pred, sample_weight=drawing)


def _compile(model: keras.Model,
             learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
             label_smoothing: float = 0.0,
             steps_per_execution: int = 1) -> None:
  # Weighted, so that the zero-weight padding of multi-replica evaluation
  # batches (input_pipeline.pad_batches) does not count.
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=SparseCrossentropy(label_smoothing),
                weighted_metrics=[DrawingAccuracy()],
                steps_per_execution=steps_per_execution)


def steps_per_execution(steps_per_epoch: int, most: int = 32) -> int:
  """Steps to run per call into TensorFlow: the largest divisor of
  `steps_per_epoch` up to `most`.

  A head step on cached features takes well under a millisecond of
  compute, so the per-call overhead dominates; bundling steps removes it.
  It must divide the epoch: Keras 3 runs whole bundles, and on an endless
  dataset a bundle across the epoch's end would take the next epoch's
  batches (and a resumed run would see other ones).
  """
  return max(d for d in range(1, min(most, steps_per_epoch) + 1)
             if steps_per_epoch % d == 0)


def _predict(model: keras.Model, ds: tf.data.Dataset) -> np.ndarray:
  """`model`'s outputs over `ds`'s batches, on this process alone.

  Not `Model.predict`: under a multi-worker strategy that splits the batches
  over the workers, while every worker here needs every prediction.
  """
  forward = tf.function(lambda x: model(x, training=False),
                        reduce_retracing=True)
  return np.concatenate([np.asarray(forward(x)) for x, _ in ds])


class _Run:
  """State shared by the phases of one `train_and_evaluate` call."""

  def __init__(self, data: DataConfig, config: TrainConfig,
               callbacks: Sequence[keras.callbacks.Callback],
               strategy: tf.distribute.Strategy, checkpoint_dir: str,
               chief: bool = True):
    self.data, self.config = data, config
    self.strategy = strategy
    self.replicas = strategy.num_replicas_in_sync
    distribute.check_batch_size(config.train_batch_size, strategy)
    # Every training batch must split evenly over the replicas; evaluation
    # batches are padded instead (pad_batches), so no drawing is skipped.
    self.drop_remainder = self.replicas > 1
    self.on_device = upsample_on_device(config.upsample)
    self.extra_callbacks = list(callbacks)
    self.source = QuickDrawSource.open(data)
    with strategy.scope():
      self._build_models(data, config)
    self.checkpoints = checkpoints.Checkpoints(
        checkpoint_dir, fingerprint(data, config), writable=chief)
    self.has_validation = self.source.split_size(Split.VALIDATION) > 0
    self.epochs_run: dict[str, int] = {}
    self.computed: list[str] = []
    self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    self.junk_per_batch = outliers.per_batch(
        config.train_batch_size, config.junk_share, self.replicas)
    self._junk: dict[str, np.ndarray] = {}

  def junk(self, features: bool = False) -> np.ndarray:
    """The training junk (`outliers`): drawings, or their bottleneck
    features (cached beside the splits')."""
    if "drawings" not in self._junk:
      logging.info("Junk pictures for outlier exposure (%d per batch)",
                   self.junk_per_batch)
      self._junk["drawings"] = outliers.cached_junk_drawings()
    if features and "features" not in self._junk:
      self._junk["features"] = bottlenecks.drawings_features(
          self.backbone, self._junk["drawings"], self.data.image_size,
          os.path.expanduser(self.config.bottleneck_dir))
    return self._junk["features" if features else "drawings"]

  def _build_models(self, data: DataConfig, config: TrainConfig) -> None:
    """The backbone, head, classifier and image model (in a strategy scope).

    With mixed precision the layers are built to compute in float16; their
    weights, and the softmax, stay float32.
    """
    previous = keras.mixed_precision.global_policy()
    if config.mixed_precision:
      keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      self._build_models_now(data, config)
    finally:
      keras.mixed_precision.set_global_policy(previous)

  def plain_classifier(self) -> keras.Model:
    """The classifier rebuilt in float32, outside any strategy, with the
    trained weights.

    What a mixed-precision or distributed run saves and exports: the
    documented float32 contract without float16 casts in the graph, and
    plain variables, so that checking the export against Keras runs no
    collective op with workers that may already have finished.
    """
    backbone = model_lib.build_backbone(self.architecture, None)
    head = model_lib.build_head(int(backbone.output_shape[-1]),
                                self.source.num_classes, self.config.dropout)
    copy = model_lib.build_classifier(backbone, head)
    copy.set_weights(self.classifier.get_weights())
    return copy

  def _build_models_now(self, data: DataConfig, config: TrainConfig) -> None:
    named = model_lib.parse_architecture(config.architecture)
    weights_path = model_lib.resolve_weights(named, config.weights,
                                             config.model_dir or None)
    if data.image_size != named.image_size and weights_path:
      # Said, not warned: configs/accurate.flags does it on purpose.
      logging.info("Running %s's weights (trained at %d px) at "
                   "--image_size=%d", named.name, named.image_size,
                   data.image_size)
    self.architecture = dataclasses.replace(named, image_size=data.image_size)
    self.value_range = self.architecture.input_range
    self.backbone = model_lib.build_backbone(self.architecture, weights_path)
    if weights_path is None:
      model_lib.calibrate_batch_norm(self.backbone, next(iter(
          input_pipeline.make_dataset(self.source, Split.TRAIN,
                                      config.train_batch_size,
                                      image_size=data.image_size,
                                      shuffle=False,
                                      value_range=self.value_range)))[0])
    self.head = model_lib.build_head(int(self.backbone.output_shape[-1]),
                                     self.source.num_classes, config.dropout)
    self.classifier = model_lib.build_classifier(self.backbone, self.head)
    # The model that images flow into: the classifier itself, or (upsampling
    # on the device) the classifier behind a DrawingsToImages layer.
    self.image_model = (model_lib.build_device_classifier(
        self.classifier, config.augment, data.seed) if self.on_device
                        else self.classifier)

  def bottlenecks(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
    if split.value not in self._cache:
      logging.info("Bottlenecks of the %s split", split.value)
      features, labels, computed = bottlenecks.load_or_compute(
          self.backbone, self.source, split, self.data.image_size,
          os.path.expanduser(self.config.bottleneck_dir),
          batch_size=self.config.train_batch_size,
          verbose=self.config.verbose)
      if computed:
        self.computed.append(split.value)
      self._cache[split.value] = (features, labels)
    return self._cache[split.value]

  def images(self, split: Split, *, train: bool, first_epoch: int = 0,
             augment: bool | None = None) -> tf.data.Dataset:
    # On the device, 28x28 uint8: the image model upsamples and augments.
    if augment is None:
      augment = self.config.augment
    return input_pipeline.make_dataset(
        self.source, split, self.config.train_batch_size,
        image_size=None if self.on_device else self.data.image_size,
        shuffle=train, epochs=None if train else 1, first_epoch=first_epoch,
        drop_remainder=train and self.drop_remainder,
        augment=train and augment and not self.on_device,
        value_range=self.value_range,
        junk=self.junk() if train and self.junk_per_batch else None,
        junk_per_batch=self.junk_per_batch)

  def for_evaluation(self, ds: tf.data.Dataset | None
                     ) -> tf.data.Dataset | None:
    """A validation dataset as `fit` needs it with this many replicas."""
    if ds is None or self.replicas == 1:
      return ds
    return input_pipeline.pad_batches(ds, self.replicas)

  def fit(self, phase: str, model: keras.Model, train_data, validation_data,
          epochs: int, steps: int, initial_epoch: int) -> None:
    """Runs `fit` for one phase, with checkpoints and TensorBoard."""
    self.epochs_run[phase] = max(0, epochs - initial_epoch)
    if initial_epoch >= epochs:
      return
    if initial_epoch:
      logging.info("Resuming %s training at epoch %d of %d", phase,
                   initial_epoch + 1, epochs)
    callbacks = [
        checkpoints.SaveEachEpoch(self.checkpoints, phase),
        keras.callbacks.TensorBoard(
            os.path.join(self.config.path("summaries_dir"), phase)),
        *self.extra_callbacks,
    ]
    # Every worker reads every batch and keeps its share: the pipeline has
    # no files to split among workers.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    train_data = train_data.with_options(options)
    validation_data = self.for_evaluation(validation_data)
    if validation_data is not None:
      validation_data = validation_data.with_options(options)
    distribute.prepare_fit(model, self.strategy, train_data.element_spec)
    model.fit(train_data, validation_data=validation_data, epochs=epochs,
              shuffle=False,  # the datasets shuffle, by (seed, epoch)
              steps_per_epoch=steps, initial_epoch=initial_epoch,
              callbacks=callbacks, verbose=self.config.verbose)

  def train_head(self, resume: dict | None) -> None:
    config = self.config
    num_train = self.source.split_size(Split.TRAIN)
    epochs, steps = head_schedule(num_train, config, self.drop_remainder)
    start = resume["epoch"] if resume and resume["phase"] == "head" else 0
    if resume and resume["phase"] != "head":
      start = epochs  # the head finished before the checkpointed phase
    if config.augment:
      model = self.image_model
      train_data = self.images(Split.TRAIN, train=True, first_epoch=start)
      validation = (self.images(Split.VALIDATION, train=False)
                    if self.has_validation else None)
    else:
      model = self.head
      if start < epochs:
        features, labels = self.bottlenecks(Split.TRAIN)
        train_data = input_pipeline.feature_dataset(
            features, labels, config.train_batch_size, shuffle=True,
            seed=config.seed_for(self.data), epochs=None, first_epoch=start,
            drop_remainder=self.drop_remainder)
        if self.junk_per_batch:
          train_data = outliers.add_junk(
              train_data, self.junk(features=True), self.junk_per_batch,
              outliers.TRAIN_SEED + config.seed_for(self.data),
              start * steps)
        validation = (input_pipeline.feature_dataset(
            *self.bottlenecks(Split.VALIDATION), config.train_batch_size,
            shuffle=False, seed=0) if self.has_validation else None)
      else:
        train_data = validation = None
    with self.strategy.scope():
      # From the cache, a step is tiny: bundle steps. Not with --augment,
      # whose steps run the backbone, nor over several replicas: Keras 3.15's
      # bundled loop under MirroredStrategy fails ("You must feed a value
      # for placeholder tensor ... while/cond/Placeholder_1").
      bundle = not config.augment and self.replicas == 1
      # The schedule (`head_learning_rate`) follows the optimizer's step
      # count, which checkpoints restore.
      rate = head_learning_rate(config, epochs * steps)
      _compile(model, rate, config.label_smoothing,
               steps_per_execution(steps) if bundle else 1)
      if resume and resume["phase"] == "head":
        self.checkpoints.restore(resume, model)
      elif resume:
        # A later phase's checkpoint holds this (nested) model's optimizer
        # state too; built, it loads instead of being skipped with a warning.
        model.optimizer.build(model.trainable_variables)
    self.fit("head", model, train_data, validation, epochs, steps, start)

  def fine_tune(self, resume: dict | None) -> None:
    config = self.config
    logging.info("Fine-tuning the backbone's top %d layers for %d epochs",
                 config.fine_tune_layers, config.fine_tune_epochs)
    model_lib.unfreeze_top_layers(self.backbone, config.fine_tune_layers)
    steps = input_pipeline.batches_per_epoch(
        self.source.split_size(Split.TRAIN), config.train_batch_size,
        self.drop_remainder)
    # A short warm-up, then a cosine to zero: the head's first large
    # gradients reach ImageNet's weights gently (at a constant rate the
    # first epoch lost ground it took the rest to win back), and the last
    # epochs settle.
    total = steps * config.fine_tune_epochs
    augment = config.augment or config.fine_tune_augment
    model = self.image_model
    start = 0
    with self.strategy.scope():
      if augment and self.on_device and not config.augment:
        # The same weights behind an augmenting first layer.
        model = model_lib.build_device_classifier(self.classifier, True,
                                                  self.data.seed)
      _compile(model, keras.optimizers.schedules.CosineDecay(
          0.0, total, warmup_target=config.fine_tune_learning_rate,
          warmup_steps=max(1, total // 20)), config.label_smoothing)
      if resume and resume["phase"] == "fine_tune":
        self.checkpoints.restore(resume, model)
        start = resume["epoch"]
    self.fit("fine_tune", model,
             self.images(Split.TRAIN, train=True, first_epoch=start,
                         augment=augment),
             (self.images(Split.VALIDATION, train=False)
              if self.has_validation else None),
             config.fine_tune_epochs, steps, start)

  def test_probabilities(self) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) over the test split, in index order."""
    if not self.config.fine_tune_layers:
      # The backbone is unchanged: the test bottlenecks are cacheable too.
      features, labels = self.bottlenecks(Split.TEST)
      data = input_pipeline.feature_dataset(
          features, labels, self.config.train_batch_size, shuffle=False,
          seed=0)
      return _predict(self.head, data), labels
    probabilities = _predict(self.image_model,
                             self.images(Split.TEST, train=False))
    return probabilities, self.source.split_labels(Split.TEST)


def export_run(data: DataConfig, config: export_lib.ExportConfig,
               model_path: str | None = None,
               classifier: keras.Model | None = None,
               source: QuickDrawSource | None = None) -> dict:
  """Exports a trained classifier, checked on the test split.

  Args:
    data: The run's data settings (for the check and calibration drawings).
    config: Where and how to export.
    model_path: A saved `model.keras`, when `classifier` is not given.
    classifier: The model itself.
    source: The opened data, if already at hand.

  Returns:
    The export report (see `export.export_model`).
  """
  if classifier is None:
    try:
      classifier = keras.models.load_model(model_path, compile=False)
    except Exception as e:  # Keras raises several kinds for a bad file
      lines = str(e).strip().splitlines()
      raise QuickDrawError(
          f"{model_path} is not a Keras model that loads ("
          f"{lines[0] if lines else type(e).__name__}); train the run again "
          "with quickdraw-train") from None
  source = source or QuickDrawSource.open(data)
  # Drawings, upsampled a chunk at a time inside the export's checks.
  drawings, labels = export_lib.drawings_from_split(
      source, Split.TEST, config.check_drawings)
  representative = None
  if "int8" in config.quantize:
    representative = export_lib.drawings_from_split(
        source, Split.TRAIN, config.representative_drawings)[0]
  # Where the scores are calibrated and int8 picks the layers it keeps in
  # float: drawings the model was not trained on, never the test drawings
  # it is judged on.
  held_out = export_lib.drawings_from_split(
      source, Split.VALIDATION if source.split_size(Split.VALIDATION)
      else Split.TRAIN, HELD_OUT_DRAWINGS)
  return export_lib.export_model(classifier, source.categories, config,
                                 drawings, labels, representative, held_out)


def train_and_evaluate(
    data: DataConfig, config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    export: export_lib.ExportConfig | None = None) -> TrainResult:
  """Trains, evaluates on the test split, and saves a classifier.

  Writes to `config.output_dir`: `model.keras`, the labels file, the
  evaluation files (see `evaluation`), `training_inputs.png`, `run.json` (the
  settings) and, while training, `checkpoints/`.

  Args:
    data: Which drawings, split how, at what input size.
    config: Model and training settings.
    callbacks: Extra Keras callbacks for every `fit` (after checkpointing).
    export: If given, export the trained model (frozen graph, TFLite,
      Android assets), checked against Keras, after saving it.

  Returns:
    The trained model and its test report.

  Raises:
    QuickDrawError: bad data, weights or paths, or test accuracy below
      `config.min_accuracy` (then no model or labels are written).
  """
  if len(data.categories) < 2:
    raise QuickDrawError(
        f"--categories names {len(data.categories)} category; a classifier "
        "tells categories apart, so name at least two")
  # First: multi-worker and TPU strategies set up the runtime.
  strategy = distribute.make_strategy(config.strategy, config.tpu)
  keras.utils.set_random_seed(config.seed_for(data))
  checkpoint_dir = os.path.join(config.output_dir, "checkpoints")
  worker = distribute.worker_index(strategy)
  if not worker:
    return _train_and_evaluate(data, config, callbacks, export, strategy,
                               checkpoint_dir)
  # Not the chief: the same work, with files written to a private scratch
  # folder, deleted at the end. Checkpoints are read from the chief's
  # folder (shared storage), so a restarted cluster resumes together.
  scratch = tempfile.mkdtemp(prefix=f"quickdraw-worker{worker}-")
  try:
    config = dataclasses.replace(
        config, output_dir=scratch, summaries_dir="", output_labels="",
        output_graph="", verbose=0, bottleneck_dir=os.path.join(
            config.bottleneck_dir, f"worker-{worker}"))
    return _train_and_evaluate(data, config, callbacks, None, strategy,
                               checkpoint_dir, chief=False)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _train_and_evaluate(data: DataConfig, config: TrainConfig,
                        callbacks: Sequence[keras.callbacks.Callback],
                        export: export_lib.ExportConfig | None,
                        strategy: tf.distribute.Strategy, checkpoint_dir: str,
                        chief: bool = True) -> TrainResult:
  # Every place the run writes, checked now (not after an hour of
  # training) and without creating anything: a run that fails leaves no
  # debris, and the folders it did create are removed again if empty.
  folders = {"output_dir": config.output_dir,
             "summaries_dir": config.path("summaries_dir"),
             "bottleneck_dir": os.path.expanduser(config.bottleneck_dir),
             "output_labels": os.path.dirname(
                 os.path.abspath(config.path("output_labels")))}
  if export is not None:
    folders.update(
        output_graph=os.path.dirname(os.path.abspath(export.output_graph)),
        output_tflite=os.path.dirname(os.path.abspath(export.output_tflite)))
    if export.android_assets_dir:
      folders["android_assets_dir"] = os.path.expanduser(
          export.android_assets_dir)
  for flag, folder in folders.items():
    atomic_files.check_writable_folder(folder, f"--{flag}")
  if chief:
    export_lib.finish_interrupted_export(config.output_dir)
  with atomic_files.removed_if_empty_on_failure(
      [config.output_dir, config.path("summaries_dir")]):
    return _train_evaluate_save(data, config, callbacks, export, strategy,
                                checkpoint_dir, chief)


def _train_evaluate_save(data: DataConfig, config: TrainConfig,
                         callbacks: Sequence[keras.callbacks.Callback],
                         export: export_lib.ExportConfig | None,
                         strategy: tf.distribute.Strategy,
                         checkpoint_dir: str, chief: bool) -> TrainResult:
  run = _Run(data, config, callbacks, strategy, checkpoint_dir, chief)
  source = run.source
  if not source.split_size(Split.TEST):
    raise QuickDrawError(
        "the test split is empty; raise --testing_percentage or "
        "--samples_per_class")
  _write_samples(run)

  resume = run.checkpoints.latest()
  run.train_head(resume)
  if config.fine_tune_layers:
    run.fine_tune(resume)

  probabilities, labels = run.test_probabilities()
  report = evaluation.classification_report(probabilities, labels,
                                            source.categories)
  print(evaluation.format_report(report))
  wrong = evaluation.pick_mistakes(labels, probabilities.argmax(1),
                                   _MISCLASSIFIED_SHOWN)
  drawings = source.read_positions(Split.TEST, wrong)[0]
  pictures = evaluation.write_report(config.output_dir, report,
                                     source.categories, drawings,
                                     labels[wrong], probabilities[wrong])
  _write_summary_images(config.path("summaries_dir"), pictures)
  run.checkpoints.clear()

  if report["top1"] < config.min_accuracy:
    raise QuickDrawError(
        f"test top-1 accuracy {report['top1']:.4f} is below --min_accuracy="
        f"{config.min_accuracy}; nothing exported (see "
        f"{os.path.join(config.output_dir, 'evaluation.json')})")

  if config.mixed_precision or config.strategy != "default":
    run.classifier = run.plain_classifier()
  _save(run, report, export)
  export_report = None
  if export is not None:
    export_report = export_run(data, export, classifier=run.classifier,
                               source=source)
    if "android_assets" in export_report:
      record_export(config.output_dir, export, export_report)
    print(export_lib.format_report(export_report))
  return TrainResult(run.classifier, report, run.epochs_run, run.computed,
                     export_report, chief)


def _save(run: _Run, report: dict,
          export: export_lib.ExportConfig | None = None) -> None:
  config = run.config
  with atomic_files.atomic_path(
      os.path.join(config.output_dir, MODEL_FILENAME)) as tmp:
    run.classifier.save(tmp)
  atomic_files.write_text(config.path("output_labels"),
                          inference.labels_text(run.source.categories))
  atomic_files.write_text(
      os.path.join(config.output_dir, RUN_FILENAME),
      json.dumps({"data": dataclasses.asdict(run.data),
                  "train": dataclasses.asdict(config),
                  "replicas": run.replicas,
                  "test": {k: report[k] for k in ("drawings", "top1", "top3")},
                  # quickdraw-export writes the app's files here again.
                  "export": recorded_export(export)},
                 indent=2) + "\n")


def recorded_export(export: export_lib.ExportConfig | None,
                    report: dict | None = None) -> dict:
  """What run.json records of an export: where the app's files went, and
  which variant they got (the export `report`'s, which is float32 when the
  asked-for one lost too much)."""
  assets = export.android_assets_dir if export else ""
  model = export.android_model if export else ""
  if report and "android_assets" in report:
    model = report["android_assets"]["given"]
  return {"android_assets_dir": os.path.abspath(os.path.expanduser(assets))
          if assets else "", "android_model": model}


def record_export(output_dir: str, export: export_lib.ExportConfig,
                  report: dict) -> None:
  """Writes `recorded_export` into the run's run.json."""
  path = os.path.join(output_dir, RUN_FILENAME)
  with open(path) as f:
    run = json.load(f)
  run["export"] = recorded_export(export, report)
  atomic_files.write_text(path, json.dumps(run, indent=2) + "\n")


def _write_samples(run: _Run) -> None:
  """A grid of training inputs, as the model sees them, with their labels."""
  images, labels = next(iter(run.images(Split.TRAIN, train=True)))
  images, labels = images[:32], labels.numpy()[:32]
  if run.on_device:  # what the device layer makes of them
    images = run.image_model.get_layer("drawings_to_images")(
        images, training=run.config.augment)
  # Back to 8-bit grey at 56 px: legible, and small in TensorBoard.
  small = tf.image.resize(images[..., :1], (56, 56), antialias=True)
  small = np.clip(preprocessing.unscale_from_range(
      small.numpy()[..., 0], run.value_range), 0, 255).astype(np.uint8)
  grid = visualize.captioned_grid(
      small, [run.source.categories[i] for i in labels], columns=8,
      title="Training inputs, as the model sees them",
      legend="Each tile: a training drawing after upsampling (and "
      "augmentation, if on), shown at 56 px; caption: its label.")
  visualize.write_png(
      os.path.join(run.config.output_dir, "training_inputs.png"), grid)
  _write_summary_images(run.config.path("summaries_dir"),
                        {"training_inputs": grid})


def _write_summary_images(summaries_dir: str,
                          pictures: dict[str, np.ndarray]) -> None:
  writer = tf.summary.create_file_writer(os.path.join(summaries_dir, "images"))
  with writer.as_default():
    for name, picture in pictures.items():
      picture = np.asarray(picture, np.uint8)
      if picture.ndim == 2:
        picture = picture[:, :, None]
      tf.summary.image(name, picture[None], step=0)
  writer.close()
