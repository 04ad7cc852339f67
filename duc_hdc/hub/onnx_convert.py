"""Import the ONNX model zoo's ResNet101-DUC (or any ONNX export of the release graph)."""
import logging
import os

import numpy as np

from .errors import ConversionError
from .release import architecture_from_convs, map_release_arrays, save_params

__all__ = ["convert_onnx"]

log = logging.getLogger(__name__)


def convert_onnx(onnx_path, classes, out_path):
    """Convert the ONNX model zoo's ResNet101-DUC (or any ONNX export of the release graph).

    Parameters
    ----------
    onnx_path : str or onnx.ModelProto
        The ``.onnx`` file (or the loaded model).
    classes : int
        Number of classes of the head.
    out_path : str
        Output ``FILE.params``; the model settings go to ``FILE.json``.

    Returns
    -------
    dict
        The model settings written to the sidecar.

    Notes
    -----
    Exporters differ in how they name things (mxnet 1.9 leaves Conv nodes unnamed; older
    exporters name them; some prefix ``arg:``/``aux:`` or rename BatchNorm statistics), so the
    arrays are identified by their *role*, not their spelling: a Conv node's inputs are
    (data, weight, bias) and a BatchNormalization node's (data, scale, bias, mean, var). Each
    array gets the release name ``<layer>_weight`` / ``<layer>/bn_moving_var`` etc., with
    ``<layer>`` read off the weight (scale) name or, failing that, the node name. The
    dilations come from the Conv attributes, the BatchNorm epsilon from the BatchNormalization
    attributes. Completeness and shapes are then checked by :func:`map_release_arrays` as for
    a release checkpoint: a missing, extra or misshapen array is an error that names it.
    Initializers that feed neither a Conv nor a BatchNormalization (Reshape targets, labels)
    are not parameters and are skipped.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover - onnx is a test/export extra
        raise ConversionError("converting ONNX needs the onnx package: pip install onnx") from e
    if isinstance(onnx_path, onnx.ModelProto):
        model, onnx_path = onnx_path, "<onnx model>"
    else:
        if not os.path.exists(onnx_path):
            raise ConversionError("ONNX model %s not found" % onnx_path)
        try:
            model = onnx.load(onnx_path)
        except Exception as e:
            raise ConversionError("cannot read %s as ONNX: %s" % (onnx_path, e)) from e
    graph = model.graph

    def plain(name):
        for prefix in ("arg:", "aux:"):
            if name.startswith(prefix):
                return name[len(prefix):]
        return name

    def stem(name, suffixes, fallback):
        name = plain(name)
        for suffix in suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[:-len(suffix)]
        return fallback or name

    tensors = {t.name: t for t in graph.initializer}
    alias = {}  # output -> input of Identity nodes (some exporters route weights through them)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    tensors[node.output[0]] = a.t
        elif node.op_type == "Identity":
            alias[node.output[0]] = node.input[0]

    def array(name, node, role):
        seen = set()
        while name in alias and name not in tensors and name not in seen:
            seen.add(name)
            name = alias[name]
        if name not in tensors:
            raise ConversionError("%s: %s node %r takes its %s from %r, which is no initializer "
                                  "or constant of the graph" % (onnx_path, node.op_type,
                                                                node.name, role, name))
        return numpy_helper.to_array(tensors[name]), name

    arrays, origin, convs, eps = {}, {}, {}, {}

    def put(release, value, source):
        if release in arrays:
            raise ConversionError("%s: tensors %s and %s both map to the release array %s"
                                  % (onnx_path, origin[release], source, release))
        arrays[release] = value
        origin[release] = source

    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv":
            if len(node.input) < 2:
                raise ConversionError("%s: Conv node %r has no weight input" % (onnx_path,
                                                                                node.name))
            weight, source = array(node.input[1], node, "weight")
            layer = stem(source, ("_weight",), node.name)
            dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1]
            convs[layer] = dict(dilate=int(dilations[0]), num_filter=int(weight.shape[0]))
            put(layer + "_weight", weight, source)
            if len(node.input) > 2 and node.input[2]:
                put(layer + "_bias", *array(node.input[2], node, "bias"))
        elif node.op_type == "BatchNormalization":
            if len(node.input) != 5:
                raise ConversionError("%s: BatchNormalization node %r has %d inputs, expected 5"
                                      % (onnx_path, node.name, len(node.input)))
            inputs = [array(name, node, role) for name, role in
                      zip(node.input[1:], ("scale", "bias", "mean", "variance"))]
            layer = stem(inputs[0][1], ("_gamma", "_scale", "_weight"),
                         stem(inputs[2][1], ("_moving_mean", "_running_mean", "_mean"),
                              node.name))
            for (value, source), suffix in zip(inputs, ("gamma", "beta", "moving_mean",
                                                        "moving_var")):
                put("%s_%s" % (layer, suffix), value, source)
            if "epsilon" in attrs:  # absent: keep the release's (ONNX would assume 1e-5)
                eps[layer] = attrs["epsilon"].f
            else:
                log.warning("%s: BatchNormalization node %r has no epsilon attribute; using the "
                            "release's", onnx_path, node.name)
    used = set(origin.values())
    skipped = sorted(plain(n) for n in tensors if n not in used)
    if skipped:
        log.info("%s: %d initializer(s) feed no Conv/BatchNormalization and are not "
                 "parameters: %s", onnx_path, len(skipped), ", ".join(skipped[:5]))
    try:
        arch = architecture_from_convs(convs)
        config, out = map_release_arrays(arrays, arch, classes)
    except ConversionError as e:
        raise ConversionError("%s: %s" % (onnx_path, e)) from e
    # float32 attributes: 1e-6 is stored as 9.99999997e-07
    distinct = sorted({float(np.float32(v)) for v in eps.values()})
    if len(distinct) > 1 and distinct[-1] > distinct[0] * (1 + 1e-4):
        raise ConversionError("%s: BatchNormalization epsilons differ (%s); the network has "
                              "one epsilon" % (onnx_path, ", ".join("%g" % v for v in distinct)))
    if distinct:
        from ..models.resnet_hdc import VARIANTS

        default = VARIANTS[config["variant"]]["bn_eps"]
        if abs(distinct[0] - default) > 1e-4 * default:
            log.info("%s: BatchNorm epsilon %g", onnx_path, distinct[0])
            config = dict(config, bn_eps=float("%.6g" % distinct[0]))
    save_params(out, out_path, config, source=dict(kind="onnx", onnx=onnx_path))
    return config
