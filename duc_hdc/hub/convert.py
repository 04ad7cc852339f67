"""Import the original release's checkpoints (and the ONNX model zoo's copy of them).

The TuSimple-DUC release saves an MXNet symbolic checkpoint: ``P-symbol.json`` plus
``P-%04d.params`` holding ``arg:NAME`` / ``aux:NAME`` arrays with names such as
``conv4_3_3x3_weight``, ``conv4_3_3x3/bn_moving_mean`` and ``fc1_cityscapes_c0_weight``. This
module reads the architecture off the graph (blocks per stage, the dilation of every block, the
head's rates and channel count), builds the matching ``tusimple`` network, maps every array
onto it by structure, and permutes the DUC head from the release's channel order
(``c * r*r + i * r + j``) into ``depth_to_space``'s (``(i * r + j) * C + c``).
"""
import json
import logging
import os
import re

import numpy as np

from ..models.resnet_hdc import RESNET_SPECS

log = logging.getLogger(__name__)

_BLOCK_RE = re.compile(r"^conv([2-5])_(\d+)_3x3$")
_HEAD_RE = re.compile(r"^fc1_(.+)_c(\d+)$")
_PARAM_SUFFIX = {  # Gluon parameter -> release array suffix
    "weight": "weight", "bias": "bias", "gamma": "gamma", "beta": "beta",
    "running_mean": "moving_mean", "running_var": "moving_var",
}
_BOTTLENECK = {"conv1": "1x1_reduce", "conv2": "3x3", "conv3": "1x1_increase",
               "downsample.0": "1x1_proj"}
_STEM = {"conv1.0": "conv1_1_3x3_s2", "conv1.1": "conv1_1_3x3_s2/bn",
         "conv1.3": "conv1_2_3x3", "conv1.4": "conv1_2_3x3/bn",
         "conv1.6": "conv1_3_3x3", "bn1": "conv1_3_3x3/bn"}


class ConversionError(ValueError):
    """A checkpoint does not fit the network (names the offending array or parameter)."""


def _parse_tuple(text):
    return tuple(int(v) for v in re.findall(r"-?\d+", text))


def architecture_from_convs(convs):
    """Read layers, dilations and the head off the release's conv layers.

    Parameters
    ----------
    convs : dict
        conv layer name -> dict(dilate=int, num_filter=int).

    Returns
    -------
    dict
        ``depth``, ``dilations`` (stage 4, stage 5), ``aspp_rates``, ``head_name``,
        ``head_channels``.
    """
    blocks = {2: {}, 3: {}, 4: {}, 5: {}}
    heads = {}
    for name, attrs in convs.items():
        m = _BLOCK_RE.match(name)
        if m:
            blocks[int(m.group(1))][int(m.group(2))] = attrs["dilate"]
            continue
        m = _HEAD_RE.match(name)
        if m:
            heads[int(m.group(2))] = (m.group(1), attrs)
    layers = tuple(len(blocks[s]) for s in (2, 3, 4, 5))
    for s in (2, 3, 4, 5):
        if sorted(blocks[s]) != list(range(1, len(blocks[s]) + 1)):
            raise ConversionError("stage %d blocks are not numbered 1..%d: %s"
                                  % (s, len(blocks[s]), sorted(blocks[s])))
    depth = [d for d, (kind, ls) in RESNET_SPECS.items() if kind == "bottleneck" and ls == layers]
    if not depth:
        raise ConversionError("blocks per stage %s match no bottleneck ResNet (%s)"
                              % (layers, {d: ls for d, (k, ls) in RESNET_SPECS.items()
                                          if k == "bottleneck"}))
    if not heads or sorted(heads) != list(range(len(heads))):
        raise ConversionError("no DUC head branches fc1_<name>_c0.. found (found %s)"
                              % sorted(heads))
    head_names = {n for n, _ in heads.values()}
    if len(head_names) != 1:
        raise ConversionError("head branches carry several prefixes: %s" % sorted(head_names))
    channels = {a["num_filter"] for _, a in heads.values()}
    if len(channels) != 1:
        raise ConversionError("head branches differ in channel count: %s" % sorted(channels))
    return dict(
        depth=depth[0],
        dilations=[[blocks[4][b] for b in sorted(blocks[4])],
                   [blocks[5][b] for b in sorted(blocks[5])]],
        aspp_rates=[heads[i][1]["dilate"] for i in sorted(heads)],
        head_name=head_names.pop(),
        head_channels=channels.pop(),
    )


def architecture_from_symbol_json(path):
    """:func:`architecture_from_convs` for a release ``-symbol.json`` file."""
    try:
        with open(path) as f:
            graph = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError("cannot read the release graph %s: %s" % (path, e)) from e
    convs = {}
    for node in graph.get("nodes", []):
        if node.get("op") == "Convolution":
            attrs = node.get("attrs", node.get("param", {}))
            convs[node["name"]] = dict(dilate=_parse_tuple(attrs.get("dilate", "(1,1)"))[0],
                                       num_filter=int(attrs["num_filter"]))
    return architecture_from_convs(convs)


def cell_width_for(head_channels, classes):
    """The cell width implied by a DUC head of ``head_channels`` = classes * r * r channels."""
    if classes < 1 or head_channels % classes:
        raise ConversionError("the head has %d channels, not a multiple of classes=%d"
                              % (head_channels, classes))
    r = int(round((head_channels // classes) ** 0.5))
    if r * r * classes != head_channels or 8 % r:
        raise ConversionError("the head has %d channels = %d classes x %d, which is not r*r with "
                              "r dividing 8; is classes=%d right?"
                              % (head_channels, classes, head_channels // classes, classes))
    return 8 // r


def release_name(structural, head_name):
    """Release array name (without arg:/aux:) for a Gluon structural parameter name."""
    prefix, _, param = structural.rpartition(".")
    suffix = _PARAM_SUFFIX[param]
    parts = prefix.split(".")
    if parts[0] == "head":  # head.branches.<i>
        return "fc1_%s_c%s_%s" % (head_name, parts[2], suffix)
    rest = ".".join(parts[1:])  # drop "backbone"
    if rest in _STEM:
        return "%s_%s" % (_STEM[rest], suffix)
    m = re.match(r"^layer(\d)\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])$", rest)
    if m is None:
        raise ConversionError("no release name for parameter %s" % structural)
    stage, block, layer = int(m.group(1)) + 1, int(m.group(2)) + 1, m.group(3)
    is_bn = layer.startswith("bn") or layer == "downsample.1"
    conv = {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3",
            "downsample.1": "downsample.0"}.get(layer, layer)
    name = "conv%d_%d_%s" % (stage, block, _BOTTLENECK[conv])
    return "%s%s_%s" % (name, "/bn" if is_bn else "", suffix)


def duc_release_to_d2s(array, classes, upscale):
    """Permute a head weight/bias from the release's channel order into depth_to_space's.

    Release channel ``c*r*r + i*r + j`` -> ours ``(i*r + j)*classes + c``.
    """
    r = upscale
    rest = array.shape[1:]
    a = array.reshape((classes, r * r) + rest)
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)).reshape((classes * r * r,) + rest)


def map_release_arrays(arrays, arch, classes):
    """Map release arrays onto the ``tusimple`` network implied by ``arch``.

    Parameters
    ----------
    arrays : dict
        release name (no ``arg:``/``aux:`` prefix) -> numpy array.
    arch : dict
        From :func:`architecture_from_symbol_json` / :func:`architecture_from_convs`.
    classes : int
        Number of classes of the head.

    Returns
    -------
    (dict, dict)
        The model settings (``net.config``) and structural name -> numpy array.
    """
    from ..models.network import DUCHDC

    cell_width = cell_width_for(arch["head_channels"], classes)
    config = dict(depth=arch["depth"], classes=classes, cell_width=cell_width,
                  dilations=arch["dilations"], aspp_rates=arch["aspp_rates"],
                  variant="tusimple", bn_frozen=True)
    net = DUCHDC(**config)  # shapes only: parameters stay uninitialized
    config = net.config
    upscale = 8 // cell_width
    out, used = {}, set()
    for structural, param in net._collect_params_with_prefix().items():
        name = release_name(structural, arch["head_name"])
        if name not in arrays:
            raise ConversionError("parameter %s needs release array %s, which the checkpoint "
                                  "does not have" % (structural, name))
        value = np.asarray(arrays[name], dtype=np.float32)
        if value.shape != param.shape:
            raise ConversionError("release array %s has shape %s; parameter %s needs %s"
                                  % (name, value.shape, structural, param.shape))
        if structural.startswith("head."):
            value = duc_release_to_d2s(value, classes, upscale)
        out[structural] = value
        used.add(name)
    extra = sorted(set(arrays) - used)
    if extra:
        raise ConversionError("%d release array(s) map to no parameter, first: %s"
                              % (len(extra), ", ".join(extra[:5])))
    return config, out


def save_params(arrays, out_path, config, **meta):
    """Write structural-name arrays as a Gluon ``.params`` file plus its sidecar, atomically."""
    import mxnet as mx

    from ..models.sidecar import write_sidecar

    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = out_path + ".tmp"
    mx.nd.save(tmp, {k: mx.nd.array(v, dtype="float32") for k, v in arrays.items()})
    os.replace(tmp, out_path)
    sidecar = write_sidecar(out_path, config, **meta)
    log.info("wrote %s (%d arrays) and %s", out_path, len(arrays), sidecar)
    return out_path


def load_release_params(path):
    """Read a release ``.params`` file into name -> numpy (``arg:``/``aux:`` prefixes dropped)."""
    import mxnet as mx

    if not os.path.exists(path):
        raise ConversionError("release parameters %s not found" % path)
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as e:
        raise ConversionError("cannot read %s as MXNet parameters: %s"
                              % (path, str(e).splitlines()[0])) from e
    if not isinstance(loaded, dict):
        raise ConversionError("%s holds an unnamed array list, not a checkpoint" % path)
    arrays = {}
    for key, value in loaded.items():
        kind, sep, name = key.partition(":")
        if not sep or kind not in ("arg", "aux"):
            raise ConversionError("%s: array %r is not named arg:NAME or aux:NAME" % (path, key))
        arrays[name] = value.asnumpy()
    return arrays


def convert_tusimple(prefix, epoch, classes, out_path):
    """Convert ``prefix-symbol.json`` + ``prefix-%04d.params`` into our ``out_path`` params.

    Returns the model settings written to the sidecar.
    """
    symbol_path = "%s-symbol.json" % prefix
    params_path = "%s-%04d.params" % (prefix, epoch)
    if not os.path.exists(symbol_path):
        raise ConversionError("release graph %s not found" % symbol_path)
    arch = architecture_from_symbol_json(symbol_path)
    arrays = load_release_params(params_path)
    for label in [k for k in arrays if k.endswith("_label")]:
        arrays.pop(label)  # a label placeholder occasionally saved with the arguments
    config, out = map_release_arrays(arrays, arch, classes)
    save_params(out, out_path, config, source=dict(kind="tusimple", symbol=symbol_path,
                                                   params=params_path))
    return config


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
