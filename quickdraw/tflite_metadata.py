"""TFLite metadata: what MediaPipe Tasks and Android Studio read from a model.

An image classifier's `.tflite` carries, besides its graph:

* a `TFLITE_METADATA` buffer, a flatbuffer of the TFLite metadata schema
  (file identifier `M001`): the model's name, version, description and
  license; the input image's colour space and size, and for float input the
  `NormalizationOptions` (MediaPipe refuses float input without them); the
  output's label file;
* the label file itself, in a zip archive appended to the flatbuffer (how
  TFLite metadata packs "associated files"), so the labels travel inside the
  model.

Why our own writer: the usual one, `tflite-support`, pins `protobuf<4` and
cannot be installed next to TensorFlow 2.21, and MediaPipe's metadata
writers fail on import in the wheels of 0.10.30 to 1.2.3. The `flatbuffers`
package (already a TensorFlow dependency) and the schema's field order are
all it takes. Only the tables a classifier needs are written; each `_add`
below names the schema field and its slot (position in the table), from
`metadata_schema.fbs`, schema version 1.5.0, whose history puts every field
used here in version 1.0.0.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Sequence

import flatbuffers
import flatbuffers.table

from quickdraw import tflite_graph

METADATA_NAME = "TFLITE_METADATA"
_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

# Enum values from the schema.
_TENSOR_AXIS_LABELS = 2          # AssociatedFileType
_RGB = 1                         # ColorSpaceType
_FEATURE_PROPERTIES = 1          # ContentProperties union
_IMAGE_PROPERTIES = 2
_NORMALIZATION_OPTIONS = 1       # ProcessUnitOptions union
_SCORE_THRESHOLDING_OPTIONS = 3


@dataclasses.dataclass(frozen=True)
class ImageInput:
  """The input image tensor, as metadata describes it.

  Attributes:
    name: Tensor name shown to app developers.
    description: What the app must hand over.
    height, width: The image size.
    mean, std: For float input, `(pixel - mean) / std`; None for uint8.
    value_min, value_max: The range of the tensor's values.
  """
  name: str
  description: str
  height: int
  width: int
  mean: float | None = None
  std: float | None = None
  value_min: float = 0.0
  value_max: float = 255.0


@dataclasses.dataclass(frozen=True)
class ModelDescription:
  """What metadata says about the model as a whole."""
  name: str
  description: str
  version: str
  author: str
  license: str


def _strings(b: flatbuffers.Builder, **values: str | None) -> dict[str, int]:
  return {k: b.CreateString(v) for k, v in values.items() if v is not None}


def _floats(b: flatbuffers.Builder, values: Sequence[float]) -> int:
  b.StartVector(4, len(values), 4)
  for v in reversed(values):
    b.PrependFloat32(v)
  return b.EndVector()


def _offsets(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
  b.StartVector(4, len(offsets), 4)
  for o in reversed(offsets):
    b.PrependUOffsetTRelative(o)
  return b.EndVector()


def _table(b: flatbuffers.Builder, slots: int, fields: Sequence[tuple]) -> int:
  """A table of `slots` fields from (slot, kind, value) entries; kind is
  "offset", "int8", "uint8", "uint32" or "float32"."""
  b.StartObject(slots)
  for slot, kind, value in fields:
    if kind == "offset":
      b.PrependUOffsetTRelativeSlot(slot, value, 0)
    elif kind == "int8":
      b.PrependInt8Slot(slot, value, 0)
    elif kind == "uint8":
      b.PrependUint8Slot(slot, value, 0)
    elif kind == "uint32":
      b.PrependUint32Slot(slot, value, 0)
    elif kind == "float32":
      b.PrependFloat32Slot(slot, value, 0.0)
  return b.EndObject()


def _stats(b: flatbuffers.Builder, low: float, high: float) -> int:
  # Stats: max (slot 0), min (slot 1), both [float].
  high_v, low_v = _floats(b, [high]), _floats(b, [low])
  return _table(b, 2, [(0, "offset", high_v), (1, "offset", low_v)])


def _image_tensor(b: flatbuffers.Builder, image: ImageInput) -> int:
  s = _strings(b, name=image.name, description=image.description)
  # ImageSize: width (0), height (1).
  size = _table(b, 2, [(0, "uint32", image.width),
                       (1, "uint32", image.height)])
  # ImageProperties: color_space (0), default_size (1).
  props = _table(b, 2, [(0, "int8", _RGB), (1, "offset", size)])
  # Content: content_properties_type (0), content_properties (1).
  content = _table(b, 3, [(0, "uint8", _IMAGE_PROPERTIES),
                          (1, "offset", props)])
  units = None
  if image.mean is not None:
    mean, std = _floats(b, [image.mean]), _floats(b, [image.std])
    # NormalizationOptions: mean (0), std (1).
    norm = _table(b, 2, [(0, "offset", mean), (1, "offset", std)])
    # ProcessUnit: options_type (0), options (1).
    units = _offsets(b, [_table(b, 2, [(0, "uint8", _NORMALIZATION_OPTIONS),
                                       (1, "offset", norm)])])
  stats = _stats(b, image.value_min, image.value_max)
  # TensorMetadata: name (0), description (1), dimension_names (2),
  # content (3), process_units (4), stats (5), associated_files (6).
  fields = [(0, "offset", s["name"]), (1, "offset", s["description"]),
            (3, "offset", content), (5, "offset", stats)]
  if units is not None:
    fields.append((4, "offset", units))
  return _table(b, 7, fields)


def _probabilities_tensor(b: flatbuffers.Builder, name: str,
                          description: str, labels_description: str,
                          score_threshold: float | None = None) -> int:
  units = None
  if score_threshold is not None:
    # ScoreThresholdingOptions: global_score_threshold (0), float.
    options = _table(b, 1, [(0, "float32", float(score_threshold))])
    units = _offsets(b, [_table(b, 2, [
        (0, "uint8", _SCORE_THRESHOLDING_OPTIONS), (1, "offset", options)])])
  s = _strings(b, name=name, description=description,
               file=LABELS_FILE, file_description=labels_description)
  # AssociatedFile: name (0), description (1), type (2).
  labels = _table(b, 5, [(0, "offset", s["file"]),
                         (1, "offset", s["file_description"]),
                         (2, "int8", _TENSOR_AXIS_LABELS)])
  files = _offsets(b, [labels])
  features = _table(b, 0, [])  # FeatureProperties has no fields
  content = _table(b, 3, [(0, "uint8", _FEATURE_PROPERTIES),
                          (1, "offset", features)])
  stats = _stats(b, 0.0, 1.0)
  fields = [(0, "offset", s["name"]), (1, "offset", s["description"]),
            (3, "offset", content), (5, "offset", stats),
            (6, "offset", files)]
  if units is not None:
    fields.append((4, "offset", units))
  return _table(b, 7, fields)


def metadata_buffer(model: ModelDescription, image: ImageInput,
                    output_name: str, output_description: str,
                    score_threshold: float | None = None) -> bytes:
  """The `TFLITE_METADATA` flatbuffer of an image classifier.

  `score_threshold`, if given, goes in as the output's
  `ScoreThresholdingOptions`: MediaPipe's classifiers drop the categories
  scored under it unless the app sets a threshold of its own, so an app
  that sets none still says "not sure" (an empty result) where it should.
  """
  b = flatbuffers.Builder(1024)
  inputs = _offsets(b, [_image_tensor(b, image)])
  outputs = _offsets(b, [_probabilities_tensor(
      b, output_name, output_description,
      "The categories, one per line, in the order of the output's scores.",
      score_threshold)])
  s = _strings(b, name=model.name, description=model.description,
               version=model.version, author=model.author,
               license=model.license, parser=MIN_PARSER_VERSION)
  # SubGraphMetadata: name (0), description (1), input_tensor_metadata (2),
  # output_tensor_metadata (3).
  subgraph = _table(b, 10, [(0, "offset", s["name"]),
                            (1, "offset", s["description"]),
                            (2, "offset", inputs), (3, "offset", outputs)])
  subgraphs = _offsets(b, [subgraph])
  # ModelMetadata: name (0), description (1), version (2),
  # subgraph_metadata (3), author (4), license (5), associated_files (6),
  # min_parser_version (7).
  root = _table(b, 8, [(0, "offset", s["name"]),
                       (1, "offset", s["description"]),
                       (2, "offset", s["version"]),
                       (3, "offset", subgraphs), (4, "offset", s["author"]),
                       (5, "offset", s["license"]),
                       (7, "offset", s["parser"])])
  b.Finish(root, file_identifier=_IDENTIFIER)
  return bytes(b.Output())


def with_metadata(model: bytes, metadata: bytes,
                  labels: Sequence[str]) -> bytes:
  """`model` with `metadata` as its `TFLITE_METADATA` buffer and the labels
  file appended as a zip archive (stored, not compressed, as TFLite's
  metadata populator writes it).

  Any metadata buffer of that name already in the model is replaced.
  """
  m = tflite_graph.read(model)
  buffer = tflite_graph.schema.BufferT()
  buffer.data = list(metadata)
  m.buffers.append(buffer)
  entries = [e for e in (m.metadata or [])
             if e.name not in (METADATA_NAME, METADATA_NAME.encode())]
  entry = tflite_graph.schema.MetadataT()
  entry.name = METADATA_NAME.encode()
  entry.buffer = len(m.buffers) - 1
  m.metadata = entries + [entry]
  out = io.BytesIO(tflite_graph.write(m))
  out.seek(0, io.SEEK_END)
  with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
    archive.writestr(LABELS_FILE, "".join(f"{c}\n" for c in labels))
  return out.getvalue()


def read_labels(model: bytes) -> list[str]:
  """The labels file packed in a model by `with_metadata`."""
  with zipfile.ZipFile(io.BytesIO(model)) as archive:
    return archive.read(LABELS_FILE).decode().splitlines()


def _process_options(model: bytes, slot: int, kind: int) -> _Table | None:
  """The options table of the first process unit of `kind` on the first
  subgraph's first input (`slot` 2) or output (`slot` 3) tensor, as
  `metadata_buffer` writes them; None if there is none."""
  buffer = _metadata_bytes(model)
  if buffer is None:
    return None
  root = _Table(buffer, flatbuffers.encode.Get(
      flatbuffers.packer.uoffset, buffer, 0))
  for subgraph in root.tables(3)[:1]:
    for tensor in subgraph.tables(slot)[:1]:
      for unit in tensor.tables(4):
        options = unit.table(1)
        if unit.uint8(0) == kind and options:
          return options
  return None


def read_normalization(model: bytes) -> tuple[float, float] | None:
  """The input's `NormalizationOptions` (mean, std), read back from the
  model's metadata; None when it has no metadata or no normalization (a
  uint8 canvas model)."""
  options = _process_options(model, 2, _NORMALIZATION_OPTIONS)
  mean, std = (options.floats(0), options.floats(1)) if options else ([], [])
  return (mean[0], std[0]) if mean and std else None


def read_score_threshold(model: bytes) -> float | None:
  """The output's `ScoreThresholdingOptions` threshold, read back from
  the model's metadata; None when it has none."""
  options = _process_options(model, 3, _SCORE_THRESHOLDING_OPTIONS)
  return options.float32(0) if options else None


def _metadata_bytes(model: bytes) -> bytes | None:
  m = tflite_graph.schema.Model.GetRootAsModel(model, 0)
  for i in range(m.MetadataLength()):
    entry = m.Metadata(i)
    if entry.Name() == METADATA_NAME.encode():
      return m.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
  return None


class _Table(flatbuffers.table.Table):
  """A flatbuffers table read by field slot, as the schema numbers them."""

  def _offset(self, slot: int) -> int:
    return self.Offset(4 + 2 * slot)

  def table(self, slot: int) -> _Table | None:
    o = self._offset(slot)
    return _Table(self.Bytes, self.Indirect(o + self.Pos)) if o else None

  def tables(self, slot: int) -> list[_Table]:
    o = self._offset(slot)
    if not o:
      return []
    start = self.Vector(o)
    return [_Table(self.Bytes, self.Indirect(start + 4 * i))
            for i in range(self.VectorLen(o))]

  def floats(self, slot: int) -> list[float]:
    o = self._offset(slot)
    if not o:
      return []
    start = self.Vector(o)
    return [self.Get(flatbuffers.number_types.Float32Flags, start + 4 * i)
            for i in range(self.VectorLen(o))]

  def float32(self, slot: int) -> float:
    o = self._offset(slot)
    return (self.Get(flatbuffers.number_types.Float32Flags, o + self.Pos)
            if o else 0.0)

  def uint8(self, slot: int) -> int:
    o = self._offset(slot)
    return (self.Get(flatbuffers.number_types.Uint8Flags, o + self.Pos)
            if o else 0)
