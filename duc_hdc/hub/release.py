"""The original release's checkpoints: its architecture, array names and channel order.

The TuSimple-DUC release saves an MXNet symbolic checkpoint: ``P-symbol.json`` plus
``P-%04d.params`` holding ``arg:NAME`` / ``aux:NAME`` arrays with names such as
``conv4_3_3x3_weight``, ``conv4_3_3x3/bn_moving_mean`` and ``fc1_cityscapes_c0_weight``. This
module reads the architecture off the graph (blocks per stage, the dilation of every block, the
head's rates and channel count), builds the matching ``tusimple`` network, maps every array
onto it by structure, and permutes the DUC head from the release's channel order
(``c * r*r + i * r + j``) into ``depth_to_space``'s (``(i * r + j) * C + c``).
"""
import logging
import os
import re

import numpy as np

from ..fileio import atomic_path, read_params
from ..models.resnet_hdc import RESNET_SPECS
from .cache import hash_sidecar
from .errors import ConversionError
from .structure import node_attrs, read_graph

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
    if not any(layers):
        raise ConversionError("no convolution is named like the release's (res2a_branch2a ... "
                              "fc1_..._c0): not a TuSimple-DUC or ONNX-zoo ResNet-DUC graph (a "
                              "duc-hdc export needs no conversion: --model PREFIX loads it)")
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


def architecture_from_symbol_json(path_or_graph):
    """:func:`architecture_from_convs` for a release ``-symbol.json`` file (or its dict)."""
    graph = path_or_graph if isinstance(path_or_graph, dict) else read_graph(path_or_graph)
    convs = {}
    for node in graph.get("nodes", []):
        if node.get("op") == "Convolution":
            attrs = node_attrs(node)
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


def release_config(arch, classes, **settings):
    """The settings of the ``tusimple`` network implied by ``arch`` (plus ``settings``, e.g.
    ``bn_eps``, ``bn_frozen``)."""
    config = dict(depth=arch["depth"], classes=classes,
                  cell_width=cell_width_for(arch["head_channels"], classes),
                  dilations=arch["dilations"], aspp_rates=arch["aspp_rates"],
                  variant="tusimple", bn_frozen=True)
    config.update(settings)
    return config


def map_release_arrays(arrays, arch, classes, **settings):
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
    settings
        Further model settings (:func:`release_config`).
    """
    from ..models.network import DUCHDC

    config = release_config(arch, classes, **settings)
    net = DUCHDC(**config)  # shapes only: parameters stay uninitialized
    config = net.config
    upscale = 8 // config["cell_width"]
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

    with atomic_path(out_path) as tmp:
        mx.nd.save(tmp, {k: mx.nd.array(v, dtype="float32") for k, v in arrays.items()})
    record = hash_sidecar(out_path)
    if os.path.exists(record):  # converted again into the cache: the weights' hash record is
        os.remove(record)       # of the file replaced; the next use registers the new one
        log.info("removed %s, the hash of the weights %s replaced", record, out_path)
    sidecar = write_sidecar(out_path, config, **meta)
    log.info("wrote %s (%d arrays) and %s", out_path, len(arrays), sidecar)
    return out_path


def load_release_params(path):
    """Read a release ``.params`` file into name -> numpy (``arg:``/``aux:`` prefixes dropped)."""
    if not os.path.exists(path):
        raise ConversionError("release parameters %s not found" % path)
    try:
        loaded = read_params(path)
    except ValueError as e:  # truncated, damaged, or an unnamed list: one line naming the file
        raise ConversionError(str(e)) from None
    arrays = {}
    for key, value in loaded.items():
        kind, sep, name = key.partition(":")
        if not sep or kind not in ("arg", "aux"):
            raise ConversionError("%s: array %r is not named arg:NAME or aux:NAME" % (path, key))
        arrays[name] = value.asnumpy()
    return arrays
