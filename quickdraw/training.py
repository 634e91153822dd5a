"""Training and evaluation of a doodle classifier, start to finish.

`train_and_evaluate(data, config)` is the whole job behind `quickdraw-train`:

1. Open the data (QuickDraw's files, and class folders of pictures) and
   build the frozen backbone (weights fetched if needed).
2. Train the head, on the bottleneck cache (each drawing's features are
   computed once) or, with augmentation, with the backbone on every batch.
3. Optionally fine-tune: unfreeze the top backbone layers (batch norm stays
   in inference mode) and train on images at a small learning rate.
4. Evaluate on the test split, write the report, apply the accuracy gate,
   and save the Keras model and labels.

Every epoch ends with a checkpoint: a killed run started again with the same
settings resumes at the next epoch with the same data order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from quickdraw import (added_rows, atomic_files, bottlenecks, checkpoints,
                       distribute, evaluation, inference, input_pipeline,
                       run_files, schedules, visualize)
from quickdraw import model as model_lib
from quickdraw import others as others_lib
from quickdraw.config import DataConfig, TrainConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

_MISCLASSIFIED_SHOWN = 64


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
    chief: False on a non-chief worker (its scratch files are gone).
    source: The opened data, for the export's check drawings.
    others: The other categories' drawings, for the export's threshold.
    bottlenecks: Split name -> its cached features (the head's backbone's).
  """
  classifier: keras.Model
  report: dict
  epochs_run: dict[str, int]
  bottlenecks_computed: list[str]
  chief: bool = True
  source: QuickDrawSource | None = None
  others: others_lib.OtherDrawings | None = None
  bottlenecks: dict = dataclasses.field(default_factory=dict)


def upsample_on_device(upsample: str) -> bool:
  """Resolves `TrainConfig.upsample`: "auto" means device iff a GPU exists."""
  return (bool(tf.config.list_physical_devices("GPU")) if upsample == "auto"
          else upsample == "device")


def fingerprint(data: DataConfig, config: TrainConfig,
                pictures: str = "") -> str:
  """Identifies what a run trains (with `pictures`, what its image folders
  hold); checkpoints resume only a run like it."""
  shaping = {k: v for k, v in dataclasses.asdict(data).items()
             if k not in ("download", "download_base_url", "data_dir")}
  if pictures:  # runs without image folders keep their fingerprints
    shaping["pictures"] = pictures
  shaping["scores"] = "softmax_with_none"  # not a plain softmax's checkpoint
  shaping.update({k: v for k, v in dataclasses.asdict(config).items()
                  if k not in ("model_dir", "bottleneck_dir", "output_dir",
                               "summaries_dir", "min_accuracy",
                               "output_labels", "output_graph", "tpu",
                               "verbose")})
  if not config.fine_tune_mixes:  # earlier runs' fingerprints, as they were
    del shaping["fine_tune_mixes"]
  return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()
                        ).hexdigest()[:16]


def _predict(model: keras.Model, ds: tf.data.Dataset) -> np.ndarray:
  """`model`'s outputs over `ds`'s batches, on this process alone (not
  `Model.predict`, which a multi-worker strategy splits over workers)."""
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
    self.source.report_class_counts(config.class_weight)
    with strategy.scope():
      self._build_models(data, config)
    self.checkpoints = checkpoints.Checkpoints(checkpoint_dir, fingerprint(
        data, config, self.source.pictures_identity()), writable=chief)
    self.has_validation = self.source.split_size(Split.VALIDATION) > 0
    self.epochs_run: dict[str, int] = {}
    self.computed: list[str] = []
    self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    # Doodles of categories outside the run (`others`): some join the
    # batches beside the junk, the rest choose the export's threshold.
    self.others = others_lib.open_others(data,
                                         exposure=config.other_share > 0)
    self.added = added_rows.AddedRows(self.source, data, config,
                                      self.others, self.replicas)

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
    """The classifier rebuilt in float32, outside any strategy, trained.

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
          verbose=self.config.verbose,
          run_drawings=sum(self.source.split_size(s) for s in Split))
      if computed:
        self.computed.append(split.value)
      self._cache[split.value] = (features, labels)
    return self._cache[split.value]

  def cached_features(self) -> dict[str, np.ndarray]:
    """{split name: features} of the splits `bottlenecks` has loaded."""
    return {split: f for split, (f, _) in self._cache.items()}

  def image_trainer(self, augment: bool) -> keras.Model:
    """The model that trains on `images(train=True, augment=augment)`
    (call in the strategy's scope)."""
    if self.added.picture_mixes:
      return model_lib.build_mixing_trainer(
          self.backbone, self.head, drawings=self.on_device, augment=augment,
          seed=self.data.seed)
    if augment and self.on_device and not self.config.augment:
      # The same weights behind an augmenting first layer.
      return model_lib.build_device_classifier(self.classifier, True,
                                               self.data.seed)
    return self.image_model

  def images(self, split: Split, *, train: bool, first_epoch: int = 0,
             augment: bool | None = None,
             for_trainer: bool = True) -> tf.data.Dataset:
    """Batches of pictures; for `image_trainer` (`for_trainer`), with the
    pairs to mix when it mixes them."""
    # On the device, 28x28 uint8: the image model upsamples and augments.
    if augment is None:
      augment = self.config.augment
    mixes = None  # plain batches, unless for a trainer that mixes
    if for_trainer and self.added.picture_mixes:
      # Its validation batches have the same structure, with no mixes.
      mixes = self.added.picture_mixes if train else 0
    return input_pipeline.make_dataset(
        self.source, split, self.config.train_batch_size,
        image_size=None if self.on_device else self.data.image_size,
        shuffle=train, epochs=None if train else 1, first_epoch=first_epoch,
        drop_remainder=train and self.drop_remainder,
        augment=train and augment and not self.on_device,
        value_range=self.value_range,
        exposure=self.added.exposure() if train else (), mixes=mixes)

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
    if self.config.class_weight == "balanced":
      train_data = input_pipeline.with_class_weights(
          train_data, self.source.split_counts(Split.TRAIN))
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
    epochs, steps = schedules.head_schedule(num_train, config,
                                            self.drop_remainder)
    start = resume["epoch"] if resume and resume["phase"] == "head" else 0
    if resume and resume["phase"] != "head":
      start = epochs  # the head finished before the checkpointed phase
    if config.augment:
      with self.strategy.scope():
        model = self.image_trainer(True)
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
            drop_remainder=self.drop_remainder,
            exposure=self.added.exposure(self.backbone),
            mixes=self.added.feature_mixes)
        validation = (input_pipeline.feature_dataset(
            *self.bottlenecks(Split.VALIDATION), config.train_batch_size,
            shuffle=False, seed=0) if self.has_validation else None)
      else:
        train_data = validation = None
    with self.strategy.scope():
      # From the cache, a step is tiny: bundle steps. Not with --augment
      # (its steps run the backbone), nor over replicas: Keras 3.15's bundled
      # loop under MirroredStrategy fails ("You must feed a value for
      # placeholder tensor ... while/cond/Placeholder_1").
      bundle = not config.augment and self.replicas == 1
      # The schedule (`head_learning_rate`) follows the optimizer's step
      # count, which checkpoints restore.
      rate = schedules.head_learning_rate(config, epochs * steps)
      schedules.compile_model(
          model, rate, config.label_smoothing,
          schedules.steps_per_execution(steps) if bundle else 1)
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
    if config.fine_tune_mixes and config.mix_share and not (
        self.added.picture_mixes):
      logging.info("Fine-tuning without feature mixes: %d replicas' slices "
                   "of a batch cannot mix each other's rows", self.replicas)
    model_lib.unfreeze_top_layers(self.backbone, config.fine_tune_layers)
    steps = input_pipeline.batches_per_epoch(
        self.source.split_size(Split.TRAIN), config.train_batch_size,
        self.drop_remainder)
    total = steps * config.fine_tune_epochs
    augment = config.augment or config.fine_tune_augment
    start = 0
    with self.strategy.scope():
      model = self.image_trainer(augment)
      schedules.compile_model(
          model, schedules.fine_tune_learning_rate(config, total),
          config.label_smoothing)
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
                             self.images(Split.TEST, train=False,
                                         for_trainer=False))
    return probabilities, self.source.split_labels(Split.TEST)


def train_and_evaluate(
    data: DataConfig, config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
  """Trains, evaluates on the test split, and saves a classifier.

  Writes to `config.output_dir`: `model.keras`, the labels file, the
  evaluation files (see `evaluation`), `training_inputs.png`, `run.json`
  and, while training, `checkpoints/`. Exporting is the caller's next step
  (`export.flow.export_run`, as quickdraw-train does).

  Args:
    data: Which drawings, split how, at what input size.
    config: Model and training settings.
    callbacks: Extra Keras callbacks for every `fit` (after checkpointing).

  Returns:
    The trained model and its test report.

  Raises:
    QuickDrawError: bad data, weights or paths, or test accuracy below
      `config.min_accuracy` (then no model or labels are written).
  """
  classes = len(others_lib.chosen_names(data))
  if classes < 2:
    raise QuickDrawError(
        f"--categories (with --image_dir's class folders) names {classes} "
        "class; a classifier tells classes apart, so name at least two")
  # First: multi-worker and TPU strategies set up the runtime.
  strategy = distribute.make_strategy(config.strategy, config.tpu)
  keras.utils.set_random_seed(config.seed_for(data))
  checkpoint_dir = os.path.join(config.output_dir, "checkpoints")
  worker = distribute.worker_index(strategy)
  if not worker:
    return _train_and_evaluate(data, config, callbacks, strategy,
                               checkpoint_dir)
  # Not the chief: the same work, its files in a private scratch folder,
  # deleted at the end. Checkpoints are read from the chief's folder
  # (shared storage), so a restarted cluster resumes together.
  scratch = tempfile.mkdtemp(prefix=f"quickdraw-worker{worker}-")
  try:
    config = dataclasses.replace(
        config, output_dir=scratch, summaries_dir="", output_labels="",
        output_graph="", verbose=0, bottleneck_dir=os.path.join(
            config.bottleneck_dir, f"worker-{worker}"))
    return _train_and_evaluate(data, config, callbacks, strategy,
                               checkpoint_dir, chief=False)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _train_and_evaluate(data: DataConfig, config: TrainConfig,
                        callbacks: Sequence[keras.callbacks.Callback],
                        strategy: tf.distribute.Strategy, checkpoint_dir: str,
                        chief: bool = True) -> TrainResult:
  # Every place the run writes, checked now (not after an hour), creating
  # nothing: a failed run leaves no debris, its new folders go if empty.
  folders = {"output_dir": config.output_dir,
             "summaries_dir": config.path("summaries_dir"),
             "bottleneck_dir": os.path.expanduser(config.bottleneck_dir),
             "output_labels": os.path.dirname(
                 os.path.abspath(config.path("output_labels")))}
  for flag, folder in folders.items():
    atomic_files.check_writable_folder(folder, f"--{flag}")
  with atomic_files.removed_if_empty_on_failure(
      [config.output_dir, config.path("summaries_dir")]):
    return _train_evaluate_save(data, config, callbacks, strategy,
                                checkpoint_dir, chief)


def _train_evaluate_save(data: DataConfig, config: TrainConfig,
                         callbacks: Sequence[keras.callbacks.Callback],
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
  wrong = evaluation.pick_mistakes(labels, probabilities.argmax(1),
                                   _MISCLASSIFIED_SHOWN)
  drawings = source.read_positions(Split.TEST, wrong)[0]
  pictures = evaluation.write_report(config.output_dir, report,
                                     source.categories, drawings,
                                     labels[wrong], probabilities[wrong])
  visualize.write_summary_images(config.path("summaries_dir"), pictures)
  run.checkpoints.clear()

  if report["top1"] < config.min_accuracy:
    raise QuickDrawError(
        f"test top-1 accuracy {report['top1']:.4f} is below --min_accuracy="
        f"{config.min_accuracy}; nothing exported (see "
        f"{os.path.join(config.output_dir, 'evaluation.json')})")

  if config.mixed_precision or config.strategy != "default":
    run.classifier = run.plain_classifier()
  _save(run, report)
  return TrainResult(run.classifier, report, run.epochs_run, run.computed,
                     chief, source, run.others, run.cached_features())


def _save(run: _Run, report: dict) -> None:
  config = run.config
  with atomic_files.atomic_path(
      os.path.join(config.output_dir, run_files.MODEL_FILENAME)) as tmp:
    run.classifier.save(tmp)
  atomic_files.write_text(config.path("output_labels"),
                          inference.labels_text(run.source.categories))
  run_files.write_run(config.output_dir, {
      "data": dataclasses.asdict(run.data),
      "train": dataclasses.asdict(config),
      "replicas": run.replicas,
      "test": {k: report[k] for k in ("drawings", "top1", "top3")},
      "other_categories": others_lib.describe(run.others),
      # Where an export put the app's files (`run_files.record_export`):
      # quickdraw-export writes them there again.
      "export": run_files.recorded_export(None)})


def _write_samples(run: _Run) -> None:
  """A grid of training inputs as the model sees them, labelled: drawings,
  then the batch's added rows (pen re-draws; junk, other doodles: "not
  sure")."""
  images, labels = next(iter(run.images(Split.TRAIN, train=True,
                                        for_trainer=False)))
  picks = np.arange(32)
  if len(labels) - run.config.train_batch_size >= 8:
    picks = np.r_[0:24, len(labels) - 8:len(labels)]
  images, labels = tf.gather(images, picks), labels.numpy()[picks]
  if run.on_device:  # what the device layer makes of them
    images = run.image_model.get_layer("drawings_to_images")(
        images, training=run.config.augment)
  grid = visualize.model_inputs_grid(
      np.asarray(images), [run.source.categories[i] if i >= 0 else
                           "not sure" for i in labels],
      value_range=run.value_range)
  visualize.write_png(
      os.path.join(run.config.output_dir, "training_inputs.png"), grid)
  visualize.write_summary_images(run.config.path("summaries_dir"),
                                 {"training_inputs": grid})
