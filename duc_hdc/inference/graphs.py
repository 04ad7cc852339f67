"""Fast inference graphs of a trained network, and the one choice of numeric precision.

Every path returns an :class:`~duc_hdc.inference.compiled.InferenceNet` that
:class:`duc_hdc.inference.segmenter.Segmenter` runs like the network itself (it carries
``classes``, ``cell_width``, ``normalization`` and ``config``) and that accepts any input size
whose height and width are multiples of 8:

``inference_runner(net, precision)``
    What predict / evaluate / benchmark run for ``--precision fp32|bf16|int8``.
``optimized_block`` (fp32)
    BatchNorm and the head's constant padding folded (:mod:`.folding`), the head's branches
    rewritten to compute their shared centre tap once (:mod:`.merging`), on AVX-512 CPUs the
    residual streams kept in pieces that oneDNN runs in one layout (:mod:`.streams`) and the
    remaining wide convolutions split by input channels (:mod:`.splitting`), then partitioned
    by ``optimize_for('MKLDNN')`` (MXNet's subgraph API): every convolution fused with its bias,
    ReLU and residual sum, the DUC head's branch sums fused into its convolutions. The default
    inference path of ``Segmenter`` on CPU. Equal to the plain network within float rounding
    (1e-4 relative, tested).
``bf16_block`` (bf16, :mod:`.bf16`)
    The folded graph converted to bfloat16 by AMP, then fused by MKLDNN; AMX tiles where the CPU
    has them (:mod:`duc_hdc.runtime`).
``quantize_net`` (int8, :mod:`.int8`)
    INT8 post-training quantization on the folded graph, calibrated on a few images.

The networks these functions return hold a *copy* of the weights taken when they are built:
retraining the source network afterwards does not change them.

This module is the face of the inference graphs: the names of :mod:`.compiled`,
:mod:`.folding`, :mod:`.int8` and :mod:`.bf16` are importable from here.
"""
import logging

from .bf16 import BF16_KIND, bf16_block, bf16_graph, check_bf16, conv_summary
from .compiled import (InferenceNet, _data_block, _network_config, _param_context,
                       _parameter_dict, mkldnn_available, symbol_block)
from .folding import fold_batchnorm, fold_constants, graph_of, inference_graph
from .merging import merge_branch_taps, merging_enabled
from .splitting import split_input_channels, splitting_helps
from .streams import split_streams, stream_state
from .int8 import (DEFAULT_QUANTIZE_EXCLUDE, DUC_HEAD_LAYERS, QUANTIZED_KIND, calibration_batch,
                   calibration_images, count_quantized_ops, load_quantized, quantize_net,
                   save_quantized)

__all__ = ["InferenceNet", "graph_of", "fold_batchnorm", "fold_constants", "inference_graph",
           "symbol_block", "optimized_block", "fp16_block", "bf16_block", "bf16_graph",
           "check_bf16", "conv_summary", "inference_runner", "precision_of", "precision_graph",
           "PRECISIONS",
           "quantize_net", "calibration_batch", "calibration_images", "save_quantized",
           "load_quantized", "count_quantized_ops", "QUANTIZED_KIND",
           "mkldnn_available", "DUC_HEAD_LAYERS", "DEFAULT_QUANTIZE_EXCLUDE"]

log = logging.getLogger(__name__)

#: the values of ``--precision`` (predict, evaluate, benchmark, export)
PRECISIONS = ("fp32", "bf16", "int8")

#: InferenceNet.kind -> the precision it computes in
_KIND_PRECISION = {"fused": "fp32", "folded": "fp32", BF16_KIND: "bf16", "int8": "int8"}


def optimized_block(net, backend="MKLDNN", ctx=None):
    """The fast fp32 inference graph of ``net``: BatchNorm and the head's weight padding
    folded (:func:`inference_graph`), the head's centre taps computed once
    (:func:`merge_branch_taps`), its wide convolutions split by input channels and its
    1024-channel residual streams kept in two pieces where oneDNN runs AVX-512 kernels
    (:func:`split_input_channels`, :func:`~duc_hdc.inference.streams.split_streams`), MKLDNN
    subgraphs fused.

    Parameters
    ----------
    net : DUCHDC
        A network with its trained (or initialized) weights.
    backend : str or None
        Subgraph backend for ``optimize_for``: ``'MKLDNN'`` (CPU; ignored with a log line when
        this MXNet build lacks it, or for a GPU context) or None (folding only).
    ctx : mx.Context, optional
        Where the graph runs; default: where ``net``'s parameters live.

    Returns
    -------
    InferenceNet
        Callable like ``net`` on any input size whose sides are multiples of 8.
    """
    config = _network_config(net)
    ctx = ctx or _param_context(net)
    if backend == "MKLDNN" and (ctx.device_type != "cpu" or not mkldnn_available()):
        log.info("MKLDNN fusion skipped (%s); BatchNorm folding only",
                 "context %s" % ctx if ctx.device_type != "cpu" else "MXNet built without it")
        backend = None
    sym, args, auxs = inference_graph(net, lazy=True)
    if backend == "MKLDNN" and merging_enabled():
        sym, args, auxs = merge_branch_taps((sym, args, auxs), lazy=True)
    if backend == "MKLDNN" and stream_state()[0]:
        sym, args, auxs = split_streams((sym, args, auxs), lazy=True)
    if backend == "MKLDNN" and splitting_helps():
        sym, args, auxs = split_input_channels((sym, args, auxs), lazy=True)
    arrays = dict(args, **auxs)
    del args, auxs
    params = _parameter_dict(arrays, ctx)
    return InferenceNet(config, "fused" if backend else "folded", _data_block(sym, params),
                        backend=backend)


def fp16_block(net, ctx):
    """``net`` in float16 with MXNet AMP (``mx.contrib.amp.convert_hybrid_block``), GPU only.

    AMP keeps numerically sensitive operators in float32 and casts around them; the block
    takes float32 input. Callers cast its output to float32. Unmeasured here (no GPU).
    """
    if ctx.device_type != "gpu":
        raise ValueError("float16 inference (--fp16, AMP) runs on a GPU only; got context %s"
                         % ctx)
    from mxnet.contrib import amp

    block = amp.convert_hybrid_block(net, target_dtype="float16", ctx=ctx)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


def precision_of(runner):
    """The precision a network or compiled graph computes in: 'fp32', 'bf16' or 'int8'."""
    if isinstance(runner, InferenceNet):
        return _KIND_PRECISION.get(runner.kind, "fp32")
    return "fp32"


def inference_runner(net, precision="fp32", ctx=None, calib_images=None, calib_mode="naive",
                     optimize=True):
    """What inference runs for ``--precision``: the network compiled for ``precision``.

    Parameters
    ----------
    net : DUCHDC or InferenceNet
        A network with its weights; or an already compiled graph (e.g. an INT8 model from
        ``duc-hdc quantize``), returned as it is when ``precision`` is None or its own.
    precision : {'fp32', 'bf16', 'int8'} or None
        ``fp32``: :func:`optimized_block` (BatchNorm folded, MKLDNN-fused on CPU; folded only
        on a GPU). ``bf16``: :func:`bf16_block` (CPU with AMX or AVX512_BF16). ``int8``:
        :func:`quantize_net` calibrated on ``calib_images`` (CPU). None: fp32 for a network,
        the graph's own precision for a compiled graph.
    ctx : mx.Context, optional
        Where it runs (default: where ``net``'s parameters live).
    calib_images : numpy.ndarray, optional
        Normalized (N, 3, H, W) images for int8 calibration (see :func:`calibration_images`).
    calib_mode : {'naive', 'entropy'}
    optimize : bool
        fp32 only: False runs the network itself (hybridized), unfused.

    Returns
    -------
    InferenceNet or the network
        ``runner(x)`` takes (N, 3, H, W) float32 and returns float32 logits.

    Raises
    ------
    ValueError
        Unknown precision; a precision this CPU or context cannot run (with what would);
        int8 without calibration images; a compiled graph asked for another precision.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError("--precision %r: choose one of %s" % (precision, ", ".join(PRECISIONS)))
    if isinstance(net, InferenceNet):
        own = precision_of(net)
        if precision not in (None, own):
            raise ValueError("the model is a compiled %s graph (%s); --precision %s needs the "
                             "network's weights (a .params file)" % (own, net.kind, precision))
        return net
    precision = precision or "fp32"
    ctx = ctx or _param_context(net)
    if precision == "fp32":
        if not optimize:
            net.hybridize(static_alloc=True, static_shape=True)
            return net
        return optimized_block(net, backend="MKLDNN" if ctx.device_type == "cpu" else None,
                               ctx=ctx)
    if ctx.device_type != "cpu":
        raise ValueError("--precision %s runs on the CPU (oneDNN); got context %s%s"
                         % (precision, ctx, " (use --fp16 on a GPU)" if precision == "bf16"
                            else ""))
    if precision == "bf16":
        return bf16_block(net, ctx=ctx)
    if calib_images is None:
        raise ValueError("--precision int8 needs calibration images (e.g. --calib-rec "
                         "TRAIN.rec), or an INT8 model written by `duc-hdc quantize`")
    return quantize_net(net, calib_images, calib_mode=calib_mode, ctx=ctx)


def precision_graph(net, precision="fp32", calib_images=None, calib_mode="naive"):
    """The portable graph of ``net`` in ``precision`` for ``export --precision``:
    ``(symbol, arg_params, aux_params)`` with input ``data`` (float32), no backend applied.

    ``fp32``: BatchNorm and constants folded (:func:`inference_graph`; the ONNX export may
    keep using the network itself). ``bf16``: :func:`bf16_graph` (MXNet with oneDNN only: ONNX
    has no use for it). ``int8``: the quantized, MKLDNN-fused graph of :func:`quantize_net`
    (what :func:`save_quantized` writes).

    Save the bf16 symbol with ``sym.save(path, remove_amp_cast=False)``: MXNet's default
    drops AMP's casts from the JSON, and the reloaded graph then fails ("requires uniform
    type").
    """
    if precision not in PRECISIONS:
        raise ValueError("--precision %r: choose one of %s" % (precision, ", ".join(PRECISIONS)))
    if precision == "fp32":
        return inference_graph(net)
    if precision == "bf16":
        check_bf16()
        return bf16_graph(net)
    if calib_images is None:
        raise ValueError("--precision int8 needs calibration images (e.g. --calib-rec "
                         "TRAIN.rec)")
    qnet = quantize_net(net, calib_images, calib_mode=calib_mode)
    sym = qnet.symbol()
    names = set(sym.list_arguments())
    args, auxs = {}, {}
    for name, param in qnet.collect_params().items():
        (args if name in names else auxs)[name] = param.data()
    return sym, args, auxs
