"""Import the original release's checkpoints (and the ONNX model zoo's copy of them).

The TuSimple-DUC release saves an MXNet symbolic checkpoint: ``P-symbol.json`` plus
``P-%04d.params`` holding ``arg:NAME`` / ``aux:NAME`` arrays with names such as
``conv4_3_3x3_weight``, ``conv4_3_3x3/bn_moving_mean`` and ``fc1_cityscapes_c0_weight``.
:func:`convert_tusimple` reads the architecture off the graph (blocks per stage, the dilation
of every block, the head's rates and channel count, the BatchNorm epsilon), builds the matching
``tusimple`` network, checks that every layer of the release graph computes as the built
network's does (strides, padding, dilations, pooling convention, BatchNorm eps / fix_gamma /
use_global_stats: :mod:`duc_hdc.hub.structure`), maps every array onto it by structure, and
permutes the DUC head from the release's channel order (``c * r*r + i * r + j``) into
``depth_to_space``'s (``(i * r + j) * C + c``). The parts: :mod:`.release` (names, layout,
arrays) and :mod:`.onnx_convert` (:func:`convert_onnx`).
"""
import json
import logging
import os

from .errors import ConversionError
from .onnx_convert import convert_onnx
from .release import (architecture_from_convs, architecture_from_symbol_json, cell_width_for,
                      duc_release_to_d2s, load_release_params, map_release_arrays,
                      release_config, release_name, save_params)
from .structure import batchnorm_settings, compare_structure, read_graph

__all__ = ["ConversionError", "architecture_from_convs", "architecture_from_symbol_json",
           "cell_width_for", "check_release_structure", "convert_onnx", "convert_tusimple",
           "duc_release_to_d2s", "load_release_params", "map_release_arrays", "release_config",
           "release_name", "release_settings", "save_params"]

log = logging.getLogger(__name__)


def release_settings(graph, source="release graph"):
    """Model settings the release graph fixes beyond the architecture: ``bn_eps`` when every
    BatchNorm uses one epsilon other than the ``tusimple`` default, ``bn_frozen`` from
    ``use_global_stats``. Layers that disagree are left to :func:`check_release_structure`,
    which names the first one that differs from the built network."""
    from ..models.resnet_hdc import VARIANTS

    eps, frozen = batchnorm_settings(graph)
    settings = {}
    default = VARIANTS["tusimple"]["bn_eps"]
    if len(eps) == 1:
        value = eps.pop()
        if abs(value - default) > 1e-4 * default:
            log.info("%s: BatchNorm epsilon %g", source, value)
            settings["bn_eps"] = float("%.6g" % value)
    if frozen == {False}:
        settings["bn_frozen"] = False
    return settings


def check_release_structure(symbol_path, classes, graph=None, config=None):
    """Compare the release graph's layers with the network the converter builds for it.

    Parameters
    ----------
    symbol_path : str
        The release's ``-symbol.json``.
    classes : int
        Number of classes of the head.
    graph : dict, optional
        The graph already read from ``symbol_path``.
    config : dict, optional
        The network's settings (default: what :func:`convert_tusimple` builds).

    Returns
    -------
    dict
        op -> number of release nodes compared (Convolution, BatchNorm, Pooling).

    Raises
    ------
    ConversionError
        Naming the release node, the attribute (stride, pad, dilate, kernel, num_group,
        no_bias, eps, fix_gamma, use_global_stats, pool_type, pooling_convention,
        global_pool) and both values.
    """
    import mxnet as mx

    from ..models.network import DUCHDC

    graph = graph if graph is not None else read_graph(symbol_path)
    arch = architecture_from_symbol_json(graph)
    if config is None:
        config = release_config(arch, classes, **release_settings(graph, symbol_path))
    # the head's channel padding is a runtime choice that changes num_filter, not the model
    net = DUCHDC(head_padding=False, **config)
    built = json.loads(net(mx.sym.var("data")).tojson())
    names = {param.name: release_name(structural, arch["head_name"])
             for structural, param in net._collect_params_with_prefix().items()}
    return compare_structure(graph, built, names, source=symbol_path)


def convert_tusimple(prefix, epoch, classes, out_path):
    """Convert ``prefix-symbol.json`` + ``prefix-%04d.params`` into our ``out_path`` params.

    The release graph's structure is checked against the built network first
    (:func:`check_release_structure`); a mismatch raises :class:`ConversionError` naming the
    node before anything is written. Returns the model settings written to the sidecar.
    """
    prefix = str(prefix)
    for suffix in ("-symbol.json", "-%04d.params" % int(epoch)):  # the file given for the prefix
        if prefix.endswith(suffix):
            prefix = prefix[:-len(suffix)]
    if int(epoch) < 0:
        raise ConversionError("--epoch %d: the checkpoint's epoch is the number in its "
                              "PREFIX-NNNN.params file name (>= 0)" % epoch)
    symbol_path = "%s-symbol.json" % prefix
    params_path = "%s-%04d.params" % (prefix, epoch)
    if not os.path.exists(symbol_path):
        raise ConversionError("release graph %s not found" % symbol_path)
    graph = read_graph(symbol_path)
    try:
        arch = architecture_from_symbol_json(graph)
    except ConversionError as e:
        raise ConversionError("%s: %s" % (symbol_path, e)) from None
    settings = release_settings(graph, symbol_path)
    counts = check_release_structure(symbol_path, classes, graph=graph,
                                     config=release_config(arch, classes, **settings))
    log.info("%s: %s match the built network", symbol_path,
             ", ".join("%d %s" % (n, op) for op, n in counts.items()))
    arrays = load_release_params(params_path)
    for label in [k for k in arrays if k.endswith("_label")]:
        arrays.pop(label)  # a label placeholder occasionally saved with the arguments
    config, out = map_release_arrays(arrays, arch, classes, **settings)
    save_params(out, out_path, config, source=dict(kind="tusimple", symbol=symbol_path,
                                                   params=params_path))
    return config
