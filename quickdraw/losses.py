"""The loss and metric that training compiles with.

Registered under the package name "quickdraw", so a saved model.keras names
them `quickdraw>SparseCrossentropy` and `quickdraw>DrawingAccuracy`: this
module must be imported before such a file loads (`run_files.load_model`
and `inference.KerasPredictor` do), and the names must never change, or
older runs stop loading.
"""

from __future__ import annotations

import keras

from quickdraw import outliers



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
