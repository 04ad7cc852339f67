"""bfloat16 inference on CPU: the folded graph converted by AMP, then fused by MKLDNN.

The conversion order that keeps both BatchNorm folding and the MKLDNN fusion (found by trying
both, shown by ``tests/test_optimize.py::test_bf16_graph_keeps_folding_and_fusion``):

1. fold BatchNorm and the head's constant padding
   (:func:`duc_hdc.inference.folding.inference_graph`), giving a plain Convolution /
   Activation / elemwise_add graph, compute the head's shared centre tap once
   (:mod:`duc_hdc.inference.merging`), and split the head's wide convolutions by input channels
   where that helps (:mod:`duc_hdc.inference.splitting`: 0.85 of the time with AMX; not
   split with AVX512_BF16 alone, where it was slower);
2. ``mxnet.contrib.amp.convert_model(..., target_dtype='bfloat16', cast_optional_params=True)``
   on that symbol: the convolutions and their weights and biases become bfloat16, one cast at
   the input and one where a float32-only operator follows;
3. ``optimize_for('MKLDNN')`` at the first call: every bf16 convolution fused with its bias,
   ReLU and residual sum (``_sg_mkldnn_conv``), as in the fp32 graph.

The reverse order (``optimize_for`` first, then AMP) leaves the fused operators in float32:
AMP's lists do not know ``_sg_mkldnn_conv`` (the issue's prototype measured it).

On CPUs with AMX (enabled at ``import duc_hdc``, :mod:`duc_hdc.runtime`) oneDNN runs the bf16
convolutions on the AMX tiles; with AVX512_BF16 only it runs them with the AVX-512 bf16 dot
product, slower (a warning says so: 0.47 of the fp32 time on an AMD EPYC Zen 5, against 0.22
with AMX); elsewhere bf16 is refused.
"""
import json
import logging

import mxnet as mx
import numpy as np

from .. import runtime
from .compiled import (InferenceNet, _data_block, _network_config, _parameter_dict,
                       mkldnn_available)
from .folding import inference_graph
from .merging import merge_branch_taps, merging_enabled
from .splitting import split_input_channels, splitting_helps

__all__ = ["bf16_graph", "bf16_block", "check_bf16", "conv_summary", "BF16_KIND"]

log = logging.getLogger(__name__)

BF16_KIND = "bf16"


def check_bf16(flags=None, environ=None):
    """How this CPU runs bfloat16 (:func:`duc_hdc.runtime.bf16_support`): ``'amx'`` or
    ``'avx512_bf16'`` (logged as slow).

    Raises
    ------
    ValueError
        The CPU has neither AMX_BF16 nor AVX512_BF16, ``DNNL_MAX_CPU_ISA`` keeps oneDNN
        below AVX512_CORE, or MXNet lacks MKLDNN.
    """
    support = runtime.bf16_support(flags, environ)
    if support is None:
        raise ValueError("--precision bf16: %s; use --precision fp32 or int8"
                         % runtime.no_bf16_reason(environ, flags))
    if not mkldnn_available():
        raise ValueError("--precision bf16 needs an MXNet build with MKLDNN (oneDNN)")
    emulated = runtime.isa_below("AVX512_CORE_BF16", environ)
    if support == "avx512_bf16" and emulated:
        log.warning("bf16 with %s: oneDNN emulates bfloat16 on AVX512_CORE, slower than on "
                    "CPUs with AVX512_BF16 or AMX (unset it, or set AVX512_CORE_BF16 or higher)",
                    emulated)
    elif support == "avx512_bf16":
        state = runtime.amx_state()
        log.warning("bf16 without AMX (%s): oneDNN runs it with AVX512_BF16, slower than on "
                    "AMX CPUs (measured: about 0.47 of the fp32 time on an AMD EPYC with "
                    "AVX512_BF16, 0.22 with AMX)", state["reason"])
    return support


def bf16_graph(net):
    """The bfloat16 graph of ``net`` as ``(symbol, arg_params, aux_params)``: BatchNorm and
    constants folded, the head's centre taps computed once (:mod:`.merging`), wide
    convolutions split by input channels where that helps (:mod:`.splitting`), then
    AMP-converted (convolutions, weights and biases in bfloat16;
    input and output float32). Portable symbol + params (no backend applied)."""
    from mxnet.contrib import amp

    sym, args, auxs = inference_graph(net)
    if merging_enabled():
        sym, args, auxs = merge_branch_taps((sym, args, auxs))
    if splitting_helps(precision="bf16"):
        sym, args, auxs = split_input_channels((sym, args, auxs))
    return amp.convert_model(sym, args, auxs, target_dtype="bfloat16",
                             cast_optional_params=True)


def bf16_block(net, ctx=None, flags=None):
    """The bf16 inference graph of ``net``, MKLDNN-fused: an :class:`InferenceNet` (``kind
    'bf16'``) taking float32 input and returning float32 logits.

    Parameters
    ----------
    net : DUCHDC
    ctx : mx.Context, optional
        CPU only.
    flags : set of str, optional
        CPU flags to decide on (default: ``/proc/cpuinfo``); see :func:`check_bf16`.
    """
    config = _network_config(net)
    ctx = ctx or mx.cpu()
    if ctx.device_type != "cpu":
        raise ValueError("--precision bf16 runs on the CPU (oneDNN); got context %s (use "
                         "--fp16 on a GPU)" % ctx)
    support = check_bf16(flags)
    sym, args, auxs = bf16_graph(net)
    params = _parameter_dict(dict(args, **auxs), ctx)
    block = InferenceNet(config, BF16_KIND, _data_block(sym, params), backend="MKLDNN")
    block.bf16_engine = support
    return block


def conv_summary(sym):
    """The convolutions of a (partitioned) graph: a list of dicts with ``name``, ``op``,
    ``weight`` (its variable's name), ``dtype`` (of the weight), ``bias`` (bool) and
    ``post_ops`` (the operators fused after the convolution: 'relu', 'sum').

    ``sym`` is :meth:`InferenceNet.symbol` after a first call (``_sg_mkldnn_conv`` nodes with
    their subgraphs), or an unpartitioned graph (``Convolution`` nodes, no post-ops).
    """
    arg_types, _, aux_types = sym.infer_type_partial(data="float32")
    types = dict(zip(sym.list_arguments(), arg_types))
    types.update(zip(sym.list_auxiliary_states(), aux_types))
    nodes = json.loads(sym.tojson())["nodes"]
    out = []
    for node in nodes:
        if node["op"] not in ("_sg_mkldnn_conv", "Convolution"):
            continue
        weight = nodes[node["inputs"][1][0]]
        post, bias = [], len(node["inputs"]) > 2
        for sub in node.get("subgraphs", []):
            for inner in sub["nodes"]:
                if inner["op"] == "Convolution":
                    bias = str(inner.get("attrs", {}).get("no_bias", "False")).lower() != "true"
                elif inner["op"] == "Activation":
                    post.append(inner.get("attrs", {}).get("act_type", "act"))
                elif inner["op"] in ("elemwise_add", "_Plus", "add_n", "broadcast_add"):
                    post.append("sum")
                elif inner["op"] == "BatchNorm":
                    post.append("batchnorm")
        out.append(dict(name=node["name"], op=node["op"], bias=bias, post_ops=post,
                        weight=weight["name"], dtype=_dtype_name(types.get(weight["name"]))))
    return out


def _dtype_name(dtype):
    """'bfloat16' for MXNet's bfloat16 numpy dtype (a record ``[('bfloat16', '<u2')]``)."""
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    if dtype.names:
        return dtype.names[0]
    return dtype.name
