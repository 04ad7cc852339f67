"""INT8 post-training quantization (MKLDNN, CPU), and saving / loading quantized models.

``quantize_net``
    INT8 post-training quantization with ``mxnet.contrib.quantization.quantize_net_v2`` on the
    folded graph, calibrated on a few images (``naive``: min/max; ``entropy``: KL thresholds),
    fused by the ``MKLDNN_QUANTIZE`` backend. On CPUs with AMX (enabled at ``import duc_hdc``,
    see :mod:`duc_hdc.runtime`) oneDNN runs its convolutions on the AMX int8 tiles. Saved and
    loaded with :func:`save_quantized` / :func:`load_quantized` (symbol JSON, params, and the
    ``.json`` settings sidecar).
"""
import json
import logging
import os
import warnings

import mxnet as mx
import numpy as np

from ..fileio import atomic_path
from ..models.sidecar import retire_artifact, write_sidecar
from .compiled import (InferenceNet, _attr_bool, _network_config, load_graph_files,
                       mkldnn_available, symbol_block)
from .folding import inference_graph
from .merging import merge_branch_taps, merging_enabled

__all__ = ["quantize_net", "calibration_batch", "calibration_images", "save_quantized",
           "load_quantized", "count_quantized_ops", "QUANTIZED_KIND", "DUC_HEAD_LAYERS",
           "DEFAULT_QUANTIZE_EXCLUDE"]

log = logging.getLogger(__name__)

#: Name fragment of the DUC head's four dilated 3x3 branches (the network's last layers), for
#: ``quantize_net(exclude=...)``.
DUC_HEAD_LAYERS = ("head_c",)

#: Layers kept in fp32 by default when quantizing. Measured on the synthetic Cityscapes val set
#: (trained ResNet-18-DUC-HDC, README "INT8"): quantizing the head too costs no more mIoU than
#: keeping it in fp32, and the head is a third of ResNet-101-DUC-HDC's FLOPs, so all layers are
#: quantized. Pass ``exclude=DUC_HEAD_LAYERS`` to keep the head in fp32.
DEFAULT_QUANTIZE_EXCLUDE = ()

QUANTIZED_KIND = "duc-hdc-int8"


def _calibration_iter(calib_images):
    """An ``NDArrayIter`` (batch 1, input ``data``) over normalized (N, 3, H, W) images."""
    if isinstance(calib_images, mx.nd.NDArray):
        calib_images = calib_images.asnumpy()
    if not isinstance(calib_images, np.ndarray):
        calib_images = list(calib_images)
        if not calib_images:
            raise ValueError("quantize_net needs at least one calibration image")
        shapes = {np.shape(im) for im in calib_images}
        if len(shapes) != 1:
            raise ValueError("calibration images must share one size (N, 3, H, W); got %s "
                             "(pad them, e.g. with calibration_batch)" % sorted(shapes))
        calib_images = np.stack([np.asarray(im, np.float32) for im in calib_images])
    calib_images = np.asarray(calib_images, np.float32)
    if calib_images.ndim != 4 or calib_images.shape[1] != 3 or len(calib_images) < 1:
        raise ValueError("calibration images must be (N, 3, H, W) with N >= 1, got shape %s"
                         % (calib_images.shape,))
    if calib_images.shape[2] % 8 or calib_images.shape[3] % 8:
        raise ValueError("calibration images must have sides that are multiples of 8, got "
                         "%dx%d" % calib_images.shape[2:])
    return mx.io.NDArrayIter(data={"data": calib_images}, batch_size=1), len(calib_images)


def calibration_batch(rgb_images, normalization, stride=8):
    """Normalize RGB images and pad them (with the mean) to one shared size.

    Parameters
    ----------
    rgb_images : sequence of (H, W, 3) uint8
    normalization : dict
        ``net.normalization``.
    stride : int
        Pad height and width up to a multiple of this.

    Returns
    -------
    numpy.ndarray
        (N, 3, H, W) float32, the largest padded size of the images.
    """
    from ..data.transforms import normalize

    chws = [normalize(np.asarray(im), normalization["mean"], normalization["std"])
            for im in rgb_images]
    if not chws:
        raise ValueError("no calibration images")
    h = max(c.shape[1] for c in chws)
    w = max(c.shape[2] for c in chws)
    h, w = -(-h // stride) * stride, -(-w // stride) * stride
    out = np.zeros((len(chws), 3, h, w), np.float32)  # 0 = the mean after normalization
    for k, c in enumerate(chws):
        out[k, :, :c.shape[1], :c.shape[2]] = c
    return out


def quantize_net(net, calib_images, calib_mode="naive", exclude=DEFAULT_QUANTIZE_EXCLUDE,
                 quantized_dtype="auto", ctx=None):
    """INT8 post-training quantization of a DUC-HDC network (MKLDNN, CPU).

    The network's BatchNorms are folded first (:func:`fold_batchnorm`) and the head's centre
    taps merged (:mod:`.merging`, unless ``DUC_HDC_NO_MERGE=1``), then
    ``mxnet.contrib.quantization.quantize_net_v2`` quantizes every convolution (except the
    ``exclude`` ones), calibrates the int8 ranges on ``calib_images`` and fuses the result with
    the ``MKLDNN_QUANTIZE`` backend. The calibrated ranges do not depend on the input size:
    calibrating on small images serves every size.

    Parameters
    ----------
    net : DUCHDC
    calib_images : numpy.ndarray, NDArray or sequence of arrays
        Normalized images (N, 3, H, W) (see :func:`calibration_batch`), sides multiples of 8.
    calib_mode : {'naive', 'entropy'}
        Thresholds from the min/max of each layer's output, or minimizing the KL divergence.
    exclude : sequence of str
        Layers whose name contains one of these fragments stay fp32 (e.g.
        :data:`DUC_HEAD_LAYERS`).
    quantized_dtype : {'auto', 'int8', 'uint8'}
        'auto' picks uint8 after a ReLU and int8 elsewhere ('entropy' requires it).
    ctx : mx.Context, optional
        CPU only.

    Returns
    -------
    InferenceNet
        ``kind='int8'``, with ``quantization`` (the settings) as an attribute.
    """
    from mxnet.contrib import quantization

    config = _network_config(net)
    ctx = ctx or mx.cpu()
    if ctx.device_type != "cpu":
        raise ValueError("INT8 quantization runs on the CPU (MKLDNN); got context %s" % ctx)
    if not mkldnn_available():
        raise RuntimeError("INT8 quantization needs an MXNet build with MKLDNN (oneDNN)")
    if calib_mode not in ("naive", "entropy"):
        raise ValueError("calib_mode %r: choose 'naive' or 'entropy'" % (calib_mode,))
    calib, count = _calibration_iter(calib_images)
    graph = inference_graph(net)
    if merging_enabled():  # the head's centre taps once, as in the fp32 and bf16 graphs
        graph = merge_branch_taps(graph)
    exclude = list(exclude or ())
    _check_exclude(graph[0], exclude)
    fp32 = symbol_block(*graph, ctx=ctx)
    with warnings.catch_warnings():
        # quantize_net_v2 builds its SymbolBlock from an untyped input; the type is float32
        warnings.filterwarnings("ignore", message="Cannot decide type")
        qblock = quantization.quantize_net_v2(
            fp32, quantized_dtype=quantized_dtype, quantize_mode="full",
            exclude_layers_match=exclude, calib_data=calib, calib_mode=calib_mode,
            num_calib_examples=count, ctx=ctx, logger=None)
    qnet = InferenceNet(config, "int8", qblock)
    qnet.quantization = dict(calib_mode=calib_mode, num_calib=count, exclude=exclude,
                             quantized_dtype=quantized_dtype,
                             calib_size=list(calib.provide_data[0].shape[2:]))
    log.info("quantized %d convolutions to int8 (%s calibration on %d image(s)%s)",
             count_quantized_ops(qnet)["int8_conv"], calib_mode, count,
             ", kept in fp32: %s" % ", ".join(exclude) if exclude else "")
    return qnet


def _check_exclude(sym, exclude):
    """ValueError naming every ``exclude`` fragment no convolution's name contains (MXNet
    ignores those silently, and the log said they were kept in fp32)."""
    convs = [n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == "Convolution"]
    unknown = [part for part in exclude if not any(part in name for name in convs)]
    if unknown:
        heads = sorted({name.rsplit("_fwd", 1)[0] for name in convs if "head" in name})
        raise ValueError("--exclude %s: no convolution's name contains %s; the names look like "
                         "%s ... %s (the head: %s)"
                         % (", ".join(unknown), " or ".join(repr(u) for u in unknown),
                            convs[0], convs[-1], ", ".join(heads) or "none"))


def count_quantized_ops(qnet):
    """Operator counts of a quantized graph: ``int8_conv``, ``fp32_conv``, ``quantize``,
    ``dequantize`` (MKLDNN fused convolutions count as int8 when their ``quantized`` attr is
    set)."""
    sym = qnet.symbol() if isinstance(qnet, InferenceNet) else qnet
    counts = dict(int8_conv=0, fp32_conv=0, quantize=0, dequantize=0)
    for node in json.loads(sym.tojson())["nodes"]:
        op, attrs = node["op"], node.get("attrs", {})
        if op in ("_sg_mkldnn_conv", "_contrib_quantized_conv"):
            quantized = op == "_contrib_quantized_conv" or _attr_bool(attrs.get("quantized"))
            counts["int8_conv" if quantized else "fp32_conv"] += 1
        elif op == "Convolution":
            counts["fp32_conv"] += 1
        elif op.startswith("_contrib_quantize"):
            counts["quantize"] += 1
        elif op == "_contrib_dequantize":
            counts["dequantize"] += 1
    return counts


def save_quantized(qnet, prefix, **extra):
    """Write an INT8 model: ``prefix-symbol.json``, ``prefix-0000.params``, ``prefix.json``.

    The sidecar ``prefix.json`` holds the model settings (as for every duc-hdc model), the
    quantization settings and ``extra`` (e.g. the measured mIoU of fp32 and int8).

    Returns
    -------
    list of str
        The three paths.
    """
    if not isinstance(qnet, InferenceNet) or qnet.kind != "int8":
        raise TypeError("save_quantized takes the InferenceNet quantize_net returns")
    out_dir = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(out_dir, exist_ok=True)
    sym = qnet.symbol()
    params = {}
    args = set(sym.list_arguments())
    for name, param in qnet.collect_params().items():
        params[("arg:" if name in args else "aux:") + name] = param.data().copyto(mx.cpu())
    sym_path, params_path = prefix + "-symbol.json", prefix + "-0000.params"
    with atomic_path(sym_path) as tmp_sym:
        sym.save(tmp_sym)
        with atomic_path(params_path) as tmp_params:
            mx.nd.save(tmp_params, params)
            retire_artifact(prefix)  # both complete: the earlier model's sidecar goes first
    side = write_sidecar(params_path, qnet.config, path=prefix + ".json",
                         kind=QUANTIZED_KIND,
                         quantization=getattr(qnet, "quantization", {}), **extra)
    return [sym_path, params_path, side]


def load_quantized(prefix, ctx=None):
    """Load an INT8 model written by :func:`save_quantized` as an :class:`InferenceNet`."""
    side = prefix + ".json"
    for path in (prefix + "-symbol.json", prefix + "-0000.params", side):
        if not os.path.isfile(path):
            raise FileNotFoundError("quantized model %s: %s is missing" % (prefix, path))
    with open(side) as f:
        doc = json.load(f)
    if doc.get("kind") != QUANTIZED_KIND or "model" not in doc:
        raise ValueError("%s is not a duc-hdc INT8 model sidecar (kind %r)"
                         % (side, doc.get("kind")))
    qnet = InferenceNet(doc["model"], "int8", load_graph_files(prefix, ctx))
    qnet.quantization = doc.get("quantization", {})
    return qnet


# ------------------------------------------------------------------------------ the command
def calibration_images(rec, num_calib, normalization):
    """``num_calib`` images spread evenly over a ``.rec`` file, normalized and padded.

    Returns
    -------
    numpy.ndarray
        (N, 3, H, W) float32 (see :func:`calibration_batch`).
    """
    from ..data import SegRecordDataset

    dataset = SegRecordDataset(rec)
    if len(dataset) == 0:
        raise ValueError("calibration file %s holds no images" % rec)
    if num_calib < 1:
        raise ValueError("--num-calib must be >= 1, got %d" % num_calib)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(num_calib, len(dataset)))
                      .round().astype(int))
    return calibration_batch([dataset[int(i)][0] for i in picks], normalization)
