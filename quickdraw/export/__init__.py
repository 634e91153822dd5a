"""Export: the trained classifier as the files an Android app loads.

`flow.export_model(classifier, categories, config, drawings, labels, ...)`
(or `flow.export_run(data, config, model_path)` for a trained run) writes

  --output_graph    frozen GraphDef (retrain.py's retrained_graph.pb): input
                    node `input` float32 [batch, S, S, 3] in the backbone's
                    input range ([-1, 1] for MobileNet v1 and v2, as
                    retrain.py's; 0..255 for V3 and EfficientNet, which
                    rescale inside), output node `final_result` (class
                    scores summing to at most 1: the rest is "none of
                    these", `losses.softmax_with_none`);
                    loads with `tf.compat.v1.import_graph_def` alone
  --output_labels   one category per line, in output order
  --output_tflite   the network as TFLite (`model.tflite`): the same input
                    and output as the graph; with --quantize,
                    `model_<mode>.tflite` per mode (dynamic, float16, int8:
                    full-integer inside, float32 at the edges)
  model_canvas[_<mode>].tflite
                    the app's model: input `input` uint8 [1, H, W, 3], the
                    canvas as the app shows it; the drawing's preprocessing
                    (`preprocessing.canvas_to_drawings`, then upsampling) in
                    float32, followed by the network of that variant
  model_info.json   the contracts and which file is which, for an app
  export_report.json  sizes, parity with Keras and accuracy of each, and
                    the calibration with its threshold curve
  threshold_curve.png that curve: right answers kept, other doodles refused

Every artifact is calibrated (`calibration`): a temperature fitted on
held-out drawings is folded into the softmax layer, and the score threshold
is the highest score under which at most 3% of the right answers fall,
on held-out drawings re-drawn as the app's canvases (or,
with --unknown_recall, refuses that share of doodles of categories no
training batch used; the curve of both sides is in the report).
model_info.json gives it, and every `.tflite` carries it in its
metadata (ScoreThresholdingOptions), which MediaPipe applies. The canvas models
answer a canvas with nothing to classify (blank, or too little ink: the
preprocessing makes an all-black drawing of it) with equal scores.

Every `.tflite` carries TFLite metadata (`tflite_metadata`) with the labels
inside, which MediaPipe Tasks' ImageClassifier needs, and uses TFLite
builtin ops only. With --android_assets_dir the app's files go there too:
the canvas model of --android_model as `model.tflite`.

Every file, the assets included, is first written under a temporary name
beside its destination, the checks run on those very files, and only when
all pass are they renamed into place together (`atomic_files.staged`): a
failed export leaves every previous file as it was.

The modules, one job each: `config` (ExportConfig and the names of files
and tensors), `convert` (Keras to .pb and TFLite), `canvas` (the app's
model around the network), `contracts` (model_info.json and the TFLite
metadata, written and read), `checks` (each artifact against Keras, and the
report) and `flow` (the order of it all, and recovery).

Only `config` is imported here: running a model (`inference`) reads its
contract without loading the converter's side.
"""

from quickdraw.export.config import (ASSET_GRAPH, ASSET_LABELS, ASSET_MODEL,
                                     DEFAULT_CANVAS_SIZE, FINAL_TENSOR_NAME,
                                     FLOAT_TOLERANCE, INPUT_NAME, KERAS_MODEL,
                                     MODEL_INFO, MODES,
                                     PREPROCESSING_TOLERANCE, QUANTIZATIONS,
                                     REPORT, ExportConfig)

__all__ = ["ASSET_GRAPH", "ASSET_LABELS", "ASSET_MODEL", "DEFAULT_CANVAS_SIZE",
           "FINAL_TENSOR_NAME", "FLOAT_TOLERANCE", "INPUT_NAME", "KERAS_MODEL",
           "MODEL_INFO", "MODES", "PREPROCESSING_TOLERANCE", "QUANTIZATIONS",
           "REPORT", "ExportConfig"]
