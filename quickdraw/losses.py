"""The head's scores, and the loss and metric that training compiles with.

Registered under the package name "quickdraw", so a saved model.keras names
them `quickdraw>softmax_with_none`, `quickdraw>SparseCrossentropy` and
`quickdraw>DrawingAccuracy`: this module must be imported before such a
file loads (`run_files.load_model` and `inference.KerasPredictor` do), and
the names must never change, or older runs stop loading.

The scores leave room for "none of these": a softmax over the classes'
logits and one more logit, fixed at 0, for everything else, whose score is
dropped (the models output one score per class, summing to at most 1).
Junk and other categories' doodles (`outliers`, `others`) are trained to
that none class; drawings of the classes to theirs. A doodle of something
else then scores low on every class, whatever its features lean to. On
canvases of 6 categories no run saw (frozen MobileNetV2 0.5, 5 classes, 11
other categories in training; scripts/README.md, "Other categories") the
default threshold refused 66% of them, against 42% with a uniform target
over the classes (Hendrycks et al.'s outlier exposure) and 49% with no
other doodles; a background class with weights of its own refused 70%
with fewer right answers, learned the categories it saw more than
"anything else" (with 6 of them it refused 49% to the none class's 53%),
and would put its label into every app's results.
"""

from __future__ import annotations

import keras

from quickdraw import outliers



@keras.saving.register_keras_serializable(package="quickdraw")
def softmax_with_none(logits):
  """Class scores beside a "none of these" class whose logit is 0:
  exp(z_i) / (1 + sum_j exp(z_j)).

  A softmax over the logits and a zero, without its last score: TFLite's
  softmax kernel (stable, and with int8's fixed output scale) does the
  work. Dividing the logits by a temperature leaves the none logit at 0,
  so `calibration.temperature_folded` calibrates these scores as it does a
  softmax's."""
  none = keras.ops.zeros_like(logits[..., :1])
  return keras.ops.softmax(keras.ops.concatenate([logits, none], axis=-1),
                           axis=-1)[..., :-1]


@keras.saving.register_keras_serializable(package="quickdraw")
class SparseCrossentropy(keras.losses.Loss):
  """Cross-entropy of class indices with label smoothing (Keras' sparse
  cross-entropy has no smoothing, and one-hot labels would cost every
  pipeline a change), over the classes and the none class whose score is
  what `softmax_with_none` leaves of 1. A label of `outliers.JUNK_LABEL`
  has the none class as its target."""

  def __init__(self, label_smoothing: float = 0.0,
               name: str = "sparse_crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.label_smoothing = label_smoothing

  def call(self, y_true, y_pred):
    classes = keras.ops.shape(y_pred)[-1]
    labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
    targets = keras.ops.one_hot(
        keras.ops.where(labels == outliers.JUNK_LABEL, classes, labels),
        classes + 1, dtype=y_pred.dtype)
    none = keras.ops.maximum(
        1.0 - keras.ops.sum(y_pred, axis=-1, keepdims=True), 0.0)
    return keras.losses.categorical_crossentropy(
        targets, keras.ops.concatenate([y_pred, none], axis=-1),
        label_smoothing=self.label_smoothing)

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
