"""Editing TFLite flatbuffers: op lists, tensor names, and chaining models.

The converter names a model's input `serving_default_input:0` and its output
`Identity`, and gives no way to put two separately converted models one
after the other. These functions edit the flatbuffer through LiteRT's own
schema (`ai_edge_litert`), so the app's canvas model is the exact float
preprocessing graph followed by the very network of a chosen variant:
quantizing the network never touches the geometry.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from quickdraw.errors import QuickDrawError

SIGNATURE_KEY = "serving_default"
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}


def read(model: bytes | schema.ModelT) -> schema.ModelT:
  """The model's flatbuffer as mutable Python objects (objects are passed
  through: edits in a row unpack and serialize once)."""
  if isinstance(model, schema.ModelT):
    return model
  return flatbuffer_utils.read_model_from_bytearray(bytearray(model))


def write(model: schema.ModelT) -> bytes:
  """Serializes `read`'s objects back to a `.tflite` flatbuffer."""
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_names(model: bytes | schema.ModelT) -> list[str]:
  """The model's operators, sorted: builtin names, or custom codes (which
  is how TensorFlow ops that TFLite lacks appear: `FlexMatMul`, ...).

  Bytes are read in place (only the operator codes), not unpacked whole.
  """
  if isinstance(model, (bytes, bytearray)):
    root = schema.Model.GetRootAs(model, 0)
    codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
    custom = [c.CustomCode() for c in codes]
  else:
    codes = model.operatorCodes
    custom = [c.customCode for c in codes]
  names = set()
  for code, custom_code in zip(codes, custom):
    builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    if builtin == schema.BuiltinOperator.CUSTOM:
      names.add((custom_code or b"?").decode())
    else:
      names.add(_OP_NAMES.get(builtin, str(builtin)))
  return sorted(names)


def check_builtin_ops(model: bytes, what: str) -> None:
  """Fails unless every op is a TFLite builtin.

  A custom or Flex (select TensorFlow) op needs a larger runtime that an app
  using MediaPipe or plain LiteRT does not have: the model would fail to
  load on the phone, so the export fails here instead.

  Raises:
    QuickDrawError: naming the ops that are not builtins.
  """
  names = op_names(model)
  builtin = set(_OP_NAMES.values())
  others = [n for n in names if n not in builtin]
  if others:
    raise QuickDrawError(
        f"{what} needs ops that TFLite does not build in ({', '.join(others)})"
        "; Android's LiteRT and MediaPipe cannot run it, so nothing was "
        "exported. Please report this with your settings")


def name_io(model: bytes | schema.ModelT, input_name: str,
            output_name: str) -> bytes:
  """Names the only input and output tensor and gives them a signature.

  Apps and interpreters then find them as `input_name` and `output_name`,
  by tensor name or through the `serving_default` signature. An object
  model (`read`) is edited in place.
  """
  m = read(model)
  graph = m.subgraphs[0]
  if len(graph.inputs) != 1 or len(graph.outputs) != 1:
    raise ValueError("expected one input and one output")
  graph.tensors[graph.inputs[0]].name = input_name.encode()
  graph.tensors[graph.outputs[0]].name = output_name.encode()
  signature = schema.SignatureDefT()
  signature.signatureKey = SIGNATURE_KEY.encode()
  signature.subgraphIndex = 0
  signature.inputs = [_tensor_map(input_name, graph.inputs[0])]
  signature.outputs = [_tensor_map(output_name, graph.outputs[0])]
  m.signatureDefs = [signature]
  return write(m)


def _tensor_map(name: str, index: int) -> schema.TensorMapT:
  entry = schema.TensorMapT()
  entry.name = name.encode()
  entry.tensorIndex = index
  return entry


def _version(m: schema.ModelT) -> tuple[int, ...]:
  for entry in m.metadata or []:
    if entry.name in (b"min_runtime_version", "min_runtime_version"):
      text = bytes(m.buffers[entry.buffer].data).split(b"\0")[0].decode()
      return tuple(int(p) for p in text.split(".") if p.isdigit())
  return ()


def _name(tensor) -> str:
  name = tensor.name
  return name.decode() if isinstance(name, bytes) else (name or "")


def chain(first: bytes | schema.ModelT, second: bytes | schema.ModelT,
          join_name: str | None = None,
          more_inputs: dict[str, str] | None = None,
          serialize: bool = True) -> bytes | schema.ModelT:
  """One model computing `second(first(x))`: `first`'s output feeds
  `second`'s input.

  Both must have one subgraph and `first` one input and one output, of the
  same shape and type where they meet. `second` may take more inputs:
  `more_inputs` maps a part of such an input's name to the name of the
  tensor inside `first` that feeds it. The result keeps `second`'s
  metadata (conversion records, the later of the two minimum runtime
  versions) and has no signature (see `name_io`). `join_name` names the
  tensor where they meet (`first`'s output). With `serialize=False` the
  result is `read`'s objects, for a further edit; object inputs are
  consumed (their parts move into the result).
  """
  a, b = read(first), read(second)
  later = max(_version(a), _version(b))
  ga, gb = a.subgraphs[0], b.subgraphs[0]
  extra = {}  # second's input -> first's tensor
  for part, name in (more_inputs or {}).items():
    inputs = [i for i in gb.inputs if part in _name(gb.tensors[i])]
    found = [j for j, t in enumerate(ga.tensors) if _name(t) == name]
    if len(inputs) != 1 or len(found) != 1:
      raise ValueError(f"cannot chain: no single input named like {part!r} "
                       f"or tensor named {name!r}")
    extra[inputs[0]] = found[0]
  joined = [i for i in gb.inputs if i not in extra]
  if len(joined) != 1:
    raise ValueError("cannot chain: the second model's inputs do not match")
  a_out, b_in = ga.outputs[0], joined[0]
  for into, source in [(b_in, a_out), *extra.items()]:
    ta, tb = ga.tensors[source], gb.tensors[into]
    if list(ta.shape) != list(tb.shape) or ta.type != tb.type:
      raise ValueError(f"cannot chain: {list(ta.shape)} type {ta.type} into "
                       f"{list(tb.shape)} type {tb.type}")

  codes: list[schema.OperatorCodeT] = list(a.operatorCodes)

  def code_index(code: schema.OperatorCodeT) -> int:
    key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode,
           code.version)
    for i, c in enumerate(codes):
      if (c.builtinCode, c.deprecatedBuiltinCode, c.customCode,
          c.version) == key:
        return i
    codes.append(code)
    return len(codes) - 1

  # Buffer 0 is the shared empty buffer; second's others go after first's.
  buffers = list(a.buffers) + list(b.buffers[1:])

  def buffer_index(index: int) -> int:
    return 0 if index == 0 else len(a.buffers) + index - 1

  tensors = list(ga.tensors)
  if join_name:
    tensors[a_out].name = join_name.encode()
  tensor_index = {}
  for i, tensor in enumerate(gb.tensors):
    if i == b_in or i in extra:
      tensor_index[i] = extra.get(i, a_out)  # a join: no tensor of its own
      continue
    tensor.buffer = buffer_index(tensor.buffer)
    tensor_index[i] = len(tensors)
    tensors.append(tensor)

  def remap(indices):
    return [tensor_index[i] if i >= 0 else i for i in (indices or [])]

  operators = list(ga.operators)
  for op in gb.operators:
    op.opcodeIndex = code_index(b.operatorCodes[op.opcodeIndex])
    op.inputs = remap(op.inputs)
    op.outputs = remap(op.outputs)
    op.intermediates = remap(op.intermediates)
    operators.append(op)

  graph = schema.SubGraphT()
  graph.tensors = tensors
  graph.operators = operators
  graph.inputs = [ga.inputs[0]]
  graph.outputs = remap(gb.outputs)
  graph.name = gb.name

  model = schema.ModelT()
  model.version = b.version
  model.description = b.description
  model.operatorCodes = codes
  model.subgraphs = [graph]
  model.buffers = buffers
  model.metadata = []
  for entry in b.metadata or []:
    entry.buffer = buffer_index(entry.buffer)
    model.metadata.append(entry)
  for entry in model.metadata:
    if entry.name in (b"min_runtime_version", "min_runtime_version"):
      data = ".".join(map(str, later)).encode()
      old = bytes(buffers[entry.buffer].data)
      replacement = schema.BufferT()
      replacement.data = list(data.ljust(max(len(old), len(data) + 1), b"\0"))
      buffers.append(replacement)
      entry.buffer = len(buffers) - 1
  model.signatureDefs = []
  return write(model) if serialize else model


def layer_costs(model: bytes) -> dict[str, int]:
  """{output tensor name: cost} of each convolution and fully connected op:
  what keeping it in float costs in a quantized model. The cost is its
  multiply-adds per input (speed) plus 32 per weight (a float weight takes
  4 bytes where int8 takes 1: size), which ranks a depthwise layer (few of
  either) cheap and a wide pointwise layer dear."""
  m = read(model)
  graph = m.subgraphs[0]
  costs = {}
  for op in graph.operators:
    code = flatbuffer_utils.get_builtin_code_from_operator_code(
        m.operatorCodes[op.opcodeIndex])
    if code not in (schema.BuiltinOperator.CONV_2D,
                    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                    schema.BuiltinOperator.FULLY_CONNECTED):
      continue
    out = graph.tensors[op.outputs[0]]
    weights = [int(d) for d in graph.tensors[op.inputs[1]].shape]
    outputs = int(abs(np.prod(out.shape)))
    if code == schema.BuiltinOperator.CONV_2D:  # weights O, H, W, I
      macs = outputs * int(np.prod(weights[1:]))
    elif code == schema.BuiltinOperator.DEPTHWISE_CONV_2D:  # 1, H, W, O
      macs = outputs * weights[1] * weights[2]
    else:  # FULLY_CONNECTED, weights O, I
      macs = outputs * weights[1]
    costs[_name(out)] = macs + 32 * int(np.prod(weights))
  return costs
