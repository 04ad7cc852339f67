"""Input-channel splitting of wide convolutions, for oneDNN's AVX-512 kernels.

oneDNN 2.4 (MXNet 1.9.1's MKLDNN) runs 3x3 convolutions on its ``brgconv`` kernels, whose
speed falls as the input channels grow. Measured with ``DNNL_VERBOSE`` on the 64 x 128 map of a
512 x 1024 image, 3x3 convolutions to 320 channels, fp32, 2 cores (Intel Xeon with AVX-512):
512 input channels 319 GFLOP/s, 1024 295, 2048 267 (and 256 -> 256 at 356). The DUC head's
four dilated branches read the 2048 channels of the backbone: split into four convolutions of
512 input channels each, accumulated by the fused ``sum`` post-op, they take 1055 instead of
1343 ms on that map; the whole network at 512 x 1024 runs in 0.95 of the time
(``bench/peers.py`` shows both in one table: ``ours fp32`` and ``ours fp32, no input split``).
bfloat16 on AMX gains more: 0.86 of the unsplit time; bfloat16 with AVX512_BF16 alone is not split
(1.08-1.10 of the unsplit time there, see :func:`splitting_helps`).

``conv(x, W) = sum_k conv(x[:, k], W[:, k])`` over channel chunks ``k``: the same value up to
float rounding (the order of the additions changes; tested). Applied where the weights are
constants and oneDNN runs the graph: the fp32 fused graph (``optimized_block``) and the bf16
graph (``bf16_graph``, also its export). Not to INT8 (every step of the longer sum chain would
be requantized, an accuracy cost not measured on trained weights), not to training, the fp32
symbol export or ONNX (other runtimes, other kernels).

Written by hand: MXNet has no pass for it.
"""
import json
import logging
import os
import re

import mxnet as mx

from .. import runtime
from .compiled import _attr_ints, _value, rebuilt_graph

__all__ = ["split_input_channels", "SPLIT_CHANNELS", "splitting_helps", "split_state"]

log = logging.getLogger(__name__)

#: input channels per chunk (the fastest measured; 256 is no faster and doubles the nodes)
SPLIT_CHANNELS = 512
#: how the nodes that compute a piece of a residual stream end (:mod:`.streams`): a convolution
#: reading one is already split by the pieces, and is not split again
PIECE_NAME = re.compile(r"_piece\d+(_sum\d+)?$")


def splitting_helps(flags=None, environ=None, precision="fp32"):
    """True where oneDNN runs the AVX-512 ``brgconv`` kernels the split is measured on: the CPU
    has AVX-512 (F, BW, DQ, VL) and ``DNNL_MAX_CPU_ISA`` (if set to a name oneDNN accepts,
    :func:`duc_hdc.runtime.isa_cap`) does not cap oneDNN below ``AVX512_CORE``. Elsewhere
    nothing is split: on an AVX2-only AMD EPYC (Zen 3) the forced split took 1.015 (512 x 1024)
    and 1.002 (1024 x 2048) of the unsplit time, alternating rounds (oneDNN 2.4 runs those
    dilated convolutions on im2col + sgemm there, whose speed does not depend on the input
    width). ``DUC_HDC_NO_SPLIT=1`` turns it off (for comparisons).

    ``precision='bf16'`` splits only where oneDNN runs bfloat16 on AMX
    (:func:`duc_hdc.runtime.bf16_support`): there the split took 0.85 of the unsplit time
    (Intel Xeon, 512 x 1024); with AVX512_BF16 and no AMX (AMD EPYC Zen 5) it took 1.10 and
    1.08 (two runs of ``bench/peers.py``, 512 x 1024): the bf16 ``brgconv`` kernels there lose
    nothing on wide inputs, and the split adds layout reorders (42 ms of 1.3 s)."""
    return split_state(flags, environ, precision)[0]


def no_brgconv_reason(flags, environ):
    """Why oneDNN will not run its AVX-512 ``brgconv`` kernels here ("off (...)"), or None: the
    CPU lacks AVX-512 (F, BW, DQ, VL), or ``DNNL_MAX_CPU_ISA`` caps oneDNN below
    ``AVX512_CORE``. The passes written for those kernels (this one and :mod:`.streams`) apply
    only where it is None."""
    missing = [f for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl") if f not in flags]
    if missing:
        return "off (no AVX-512: %s missing)" % ", ".join(missing)
    capped = runtime.isa_below("AVX512_CORE", environ)
    if capped:
        return "off (%s is below AVX512_CORE)" % capped
    return None


def split_state(flags=None, environ=None, precision="fp32"):
    """``(on, reason)``: whether the ``precision`` ('fp32' or 'bf16') inference graph splits
    wide convolutions, and why (the lines ``duc-hdc env`` and ``duc-hdc benchmark`` print)."""
    environ = os.environ if environ is None else environ
    if environ.get("DUC_HDC_NO_SPLIT", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "off (DUC_HDC_NO_SPLIT is set)"
    flags = runtime.cpu_flags() if flags is None else flags
    why_not = no_brgconv_reason(flags, environ)
    if why_not:
        return False, why_not
    if precision == "bf16" and runtime.bf16_support(flags, environ) != "amx":
        return False, ("off for bf16 without AMX (the AVX512_BF16 kernels gain nothing from "
                       "it; the split's reorders cost more)")
    return True, ("on (AVX-512: convolutions wider than %d input channels run as chunks of at "
                  "most %d)" % (SPLIT_CHANNELS, SPLIT_CHANNELS))


def split_input_channels(graph, channels=None, data_shape=(1, 3, 64, 64), lazy=False):
    """Split every non-1x1, ungrouped convolution reading more than ``channels`` input channels
    into convolutions of ``channels`` input channels each, summed.

    The sum is a chain of ``elemwise_add`` that MKLDNN fuses into the convolutions (``sum``
    post-op). A convolution whose only reader is an ``elemwise_add`` (the DUC head's branch
    sum) is continued into that chain, so the head stays one chain of fused convolutions.

    Parameters
    ----------
    graph : (mx.sym.Symbol, dict, dict)
        A graph with its arg and aux params (values may be lazy: zero-argument callables),
        input ``data``, e.g. from :func:`~duc_hdc.inference.folding.inference_graph`.
    channels : int, optional
        At most this many input channels per chunk (default :data:`SPLIT_CHANNELS`). The
        chunks are equal: a convolution whose input channels do not split evenly into chunks
        of at most ``channels`` is left alone (the zoo's 2048 split into 4 x 512).
    data_shape : tuple
        Any valid input shape, used only to infer the weights' shapes.
    lazy : bool
        Return the weight chunks as zero-argument callables (computed when loaded), not arrays.

    Returns
    -------
    (mx.sym.Symbol, dict, dict)
        The rewritten graph; arg params hold the weight chunks in place of the split
        weights. Unchanged when nothing is that wide.
    """
    sym, args, auxs = graph
    channels = int(channels or SPLIT_CHANNELS)
    arg_shapes, _, _ = sym.infer_shape_partial(data=data_shape)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    doc = json.loads(sym.tojson())
    nodes = doc["nodes"]
    readers = {}
    for i, node in enumerate(nodes):
        for src, out, _ in node["inputs"]:
            readers.setdefault((src, out), []).append(i)
    for src, out, _ in doc["heads"]:
        readers.setdefault((src, out), []).append(-1)

    def wide(node):
        if node["op"] != "Convolution":
            return False
        attrs = node.get("attrs", {})
        kernel = _attr_ints(attrs.get("kernel"), "(1, 1)")
        weight = nodes[node["inputs"][1][0]]["name"]
        shape = shapes.get(weight)
        return (int(attrs.get("num_group", 1)) == 1 and any(k != 1 for k in kernel)
                and not PIECE_NAME.search(nodes[node["inputs"][0][0]]["name"])
                and len(node["inputs"]) == 3 and weight in args and shape is not None
                and shape[1] > channels and shape[1] % _pieces(shape[1], channels) == 0
                and nodes[node["inputs"][2][0]]["name"] in args)

    split = {i for i, node in enumerate(nodes) if wide(node)}
    if not split:
        return sym, dict(args), dict(auxs)

    new_args = dict(args)
    out_nodes, index = [], {}
    slices = {}  # (input entry, first channel) -> new node index of its slice

    def add_node(node):
        out_nodes.append(node)
        return len(out_nodes) - 1

    def chunks_of(i, node):
        """Append the chunk convolutions of node ``i``; return their new indices."""
        data, weight, bias = node["inputs"]
        wname = nodes[weight[0]]["name"]
        bname = nodes[bias[0]]["name"]
        in_channels = shapes[wname][1]
        size = in_channels // _pieces(in_channels, channels)
        made = []
        for k, begin in enumerate(range(0, in_channels, size)):
            end = begin + size
            key = (tuple(data[:2]), begin)
            if key not in slices:
                slices[key] = add_node(dict(
                    op="slice", name="%s_in%d_%d" % (nodes[data[0]]["name"], begin, end),
                    attrs={"begin": "(None, %d)" % begin, "end": "(None, %d)" % end},
                    inputs=[[index[data[0]], data[1], 0]]))
            wk, bk = "%s_in%d_weight" % (node["name"], k), "%s_in%d_bias" % (node["name"], k)
            new_args[wk] = _Chunk(args[wname], begin, end)
            new_args[bk] = args[bname] if k == 0 else _Zeros(args[bname])
            w_i = add_node(dict(op="null", name=wk, inputs=[]))
            b_i = add_node(dict(op="null", name=bk, inputs=[]))
            made.append(add_node(dict(node, name="%s_in%d" % (node["name"], k),
                                      inputs=[[slices[key], 0, 0], [w_i, 0, 0], [b_i, 0, 0]])))
        new_args.pop(wname, None)
        new_args.pop(bname, None)
        return made

    def chain(total, entries, name):
        """``total + e0 + e1 + ...`` as two-input additions (``total`` None: from ``e0``)."""
        for k, e in enumerate(entries):
            if total is None:
                total = [e, 0, 0]
            else:
                total = [add_node(dict(op="elemwise_add", name="%s_%d" % (name, k),
                                       inputs=[total, [e, 0, 0]])), 0, 0]
        return total

    def entry_of(src, out, v):
        if src in split and src not in index:  # read by something else than a sum: on its own
            index[src] = chain(None, chunks_of(src, nodes[src]), nodes[src]["name"])[0]
        return [index[src], out, v]

    def continues(src):
        return src in split and src not in index and len(readers[(src, 0)]) == 1

    replaced_vars = {nodes[s]["inputs"][k][0] for s in split for k in (1, 2)}
    for i, node in enumerate(nodes):
        if i in split:
            continue  # built where it is read
        if i in replaced_vars and all(r in split for r in readers.get((i, 0), [])):
            continue  # a split weight or bias: replaced by its chunks
        if node["op"] == "elemwise_add" and any(continues(s) for s, _, _ in node["inputs"]):
            # a sum reading a split convolution: the chunks continue the other input's chain,
            # so every convolution of the head accumulates into one fused chain
            total = None
            for src, out, v in sorted(node["inputs"], key=lambda e: continues(e[0])):
                if continues(src):
                    total = chain(total, chunks_of(src, nodes[src]), node["name"] + "_%d" % src)
                else:
                    total = entry_of(src, out, v)
            index[i] = total[0]
            continue
        inputs = [entry_of(*e) for e in node["inputs"]]
        index[i] = add_node(dict(node, inputs=inputs))
    heads = [entry_of(*e) for e in doc["heads"]]
    rewritten, new_args = rebuilt_graph(doc, out_nodes, heads, new_args,
                                        evaluate=() if lazy else (_Chunk, _Zeros))
    log.debug("split %d convolution(s) into chunks of %d input channels", len(split), channels)
    return rewritten, new_args, dict(auxs)


def _pieces(in_channels, channels):
    return -(-in_channels // channels)


class _Chunk(object):
    """``weight[:, begin:end]`` (``axis=1``, input channels) or ``weight[begin:end]``
    (``axis=0``, output channels; also a bias), computed when asked for (lazy like the folded
    weights)."""

    def __init__(self, weight, begin, end, axis=1):
        self.weight, self.begin, self.end, self.axis = weight, begin, end, axis

    def __call__(self):
        return mx.nd.slice_axis(_value(self.weight), axis=self.axis, begin=self.begin,
                                end=self.end).copy()


class _Zeros(object):
    """Zeros shaped like a bias (the chunks after the first add no bias)."""

    def __init__(self, bias):
        self.bias = bias

    def __call__(self):
        return mx.nd.zeros_like(_value(self.bias))
