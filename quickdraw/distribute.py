"""Training on several devices or machines: tf.distribute strategies.

`make_strategy(name)` turns `--strategy` into a `tf.distribute.Strategy`:

* `default`: one device (the first GPU if there is one, else the CPU).
* `mirrored`: every local GPU, one replica each, gradients all-reduced. On a
  machine without GPUs, every logical CPU device (normally one; tests split
  the CPU in two to check the multi-replica code on any machine).
* `multi_worker`: `mirrored` across machines. Every worker runs the same
  command; `TF_CONFIG` names the cluster and this worker's place in it.
* `tpu`: a Cloud TPU, found by `--tpu` (a name or grpc:// address; empty on a
  TPU VM).

`--train_batch_size` is the global batch: each step's batch is split evenly
over the replicas, so it must be a multiple of their number. Learning rates
are used as given, for that global batch, so the same flags describe the same
training on one device or eight; the README says how to scale them when
raising the batch to fill more devices.

With several workers only the chief writes the run's files (model, reports,
checkpoints, exports); the others write theirs to a private temporary folder
that is deleted at the end, so they run the very same code.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from quickdraw.errors import QuickDrawError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
  """The strategy for `--strategy=name`.

  Call it before any other TensorFlow work: multi-worker and TPU strategies
  must set up the runtime before it starts.

  Raises:
    QuickDrawError: an unknown name, no `TF_CONFIG` for `multi_worker`, or no
      reachable TPU.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or (
        tf.config.list_logical_devices("CPU"))
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise QuickDrawError(
          "--strategy=multi_worker needs TF_CONFIG, the cluster's "
          "description (see the README's scaling section); set it on every "
          "worker, or use --strategy=mirrored on one machine")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
      raise QuickDrawError(f"TF_CONFIG is not valid JSON ({e}); fix it on "
                           "this worker") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
      where = f"at --tpu={tpu}" if tpu else "on this machine"
      raise QuickDrawError(
          f"no TPU found {where} ({str(e).strip().splitlines()[0]}); pass "
          "--tpu=NAME or run on a TPU VM") from None
    return tf.distribute.TPUStrategy(resolver)
  raise QuickDrawError(f"--strategy={name}; use one of {', '.join(STRATEGIES)}")


def worker_index(strategy: tf.distribute.Strategy) -> int:
  """0 on the chief (and on a single machine), else this worker's number."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return 0
  task_type, task_id = resolver.task_type, resolver.task_id or 0
  if task_type == "chief":
    return 0
  if task_type == "worker":
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_id + 1 if has_chief else task_id
  return task_id + 1  # evaluators and others never count as the chief


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files."""
  return worker_index(strategy) == 0


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
  """Fails unless the global batch splits evenly over the replicas."""
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise QuickDrawError(
        f"--train_batch_size={batch_size} does not split over {replicas} "
        f"replicas; pass a multiple of {replicas}, such as "
        f"{-(-batch_size // replicas) * replicas}")


def prepare_fit(model, strategy: tf.distribute.Strategy,
                element_spec) -> None:
  """Works around Keras 3's `fit` under MultiWorkerMirroredStrategy.

  Keras 3.15 fails there in two places (keras-team/keras#20585, open):

  * before the first step it reduces a real batch across workers just to
    learn its shapes, which raises "Attempt to convert a value (PerReplica
    ...)"; building from the dataset's `element_spec` needs no batch;
  * each step's logs are scalars, which its multi-worker "mean" reduces
    along axis 0 ("Invalid reduction dimension 0"); the steps here return
    them as 1-element vectors, which that reduction turns back to scalars.
    Epoch logs (TensorBoard, checkpoints) come from the metrics and stay
    scalars.

  A no-op for every other strategy.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  with strategy.scope():
    model._symbolic_build(data_batch=element_spec)  # pylint: disable=protected-access
  model._maybe_symbolic_build = lambda *args, **kwargs: None  # pylint: disable=protected-access
  if not getattr(model, "_quickdraw_vector_logs", False):
    for name in ("train_step", "test_step"):
      step = getattr(model, name)
      setattr(model, name, _vector_logs(step))
    model._quickdraw_vector_logs = True  # pylint: disable=protected-access


def _vector_logs(step):
  def wrapped(data):
    return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
  return wrapped
