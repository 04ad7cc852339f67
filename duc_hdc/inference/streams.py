"""Residual streams kept in pieces, so that oneDNN keeps them in one layout (fp32, AVX-512).

oneDNN 2.4 (MXNet 1.9.1's MKLDNN) picks each convolution's kernel, and with it the memory
layout of its output, by shape; MXNet offers no choice. On the 64 x 128 map of a 512 x 1024
image, the 1x1 convolutions to 1024 channels (the ``res4`` blocks' expansion) and to 2048
(``res5``) run on ``jit_1x1``, which writes the channel-blocked layout (``aBcd16b``), while the
1x1 convolutions that read the stream next and every 3x3 run on ``brgconv``, which reads and
writes NHWC. So every block reordered its output to NHWC and its input back to blocked, and the
DUC head reordered each of its input's slices once per reader: 274 ms of reorders in a 4.85 s
call (``DNNL_VERBOSE``, AMD EPYC Zen 4, 2 cores). That was the whole of what the fused graph lost
to OpenVINO, whose convolutions all run NHWC: its convolutions took 4758 ms, ours 4506.

oneDNN gives 1x1 convolutions of 256, 384 and 768 output channels to ``brgconv_1x1`` (NHWC),
and those of 512 and 1024 to ``jit_1x1`` unless they read 1024 channels or more (measured one
at a time). So each stream is kept as tensors of those widths (:data:`PIECES`):

- a 1x1 convolution that writes the stream (its readers are residual sums) becomes one
  convolution per piece, its weights and bias cut along the output channels; so does a 1x1
  convolution that reads a stream and writes a width with pieces (``res5``'s 2048 -> 512),
  and the ReLU and the 3x3 convolution after it then run on its pieces;
- the residual sum and the ReLU after it run per piece (MKLDNN fuses both into the piece's
  convolution: ``sum`` and ``eltwise_relu`` post-ops);
- a convolution that reads the stream reads every piece, with the weights cut along the input
  channels, the partial results accumulated by the fused ``sum`` post-op. Where the
  convolution is read only by a sum (the DUC head's branches), its pieces continue that sum's
  chain, so the head stays one chain of fused convolutions. This replaces, for the head, the
  slices :mod:`.splitting` would cut (it leaves convolutions that read a piece alone);
- anything else that reads the stream gets the pieces concatenated again.

``conv(x, W)`` over pieces equals the whole up to float rounding (the order of the additions
in the reading convolutions changes; tested). Measured on the Zen 4: a chain of 6 ``res4``
blocks took 0.93-0.96 of the time at 64 x 128 and 0.96 at 128 x 256; the whole network's
oneDNN primitives went from 4787 ms (274 ms of them reorders) to 4553 ms (43 ms of reorders).

Applied to the fp32 fused graph where :mod:`.splitting` applies (AVX-512, oneDNN not capped
below ``AVX512_CORE``); ``DUC_HDC_NO_STREAM_SPLIT=1`` turns it off. Not to bf16, INT8 or
training (other kernels, not measured), nor to the exports for other runtimes.

Written by hand: MXNet has no pass for it.
"""
import logging
import os

from .. import runtime
from .compiled import _attr_ints, graph_nodes, rebuilt_graph
from .splitting import _Chunk, _Zeros, no_brgconv_reason

__all__ = ["split_streams", "stream_state", "PIECES", "OPT_OUT"]

log = logging.getLogger(__name__)

#: stream width -> the widths of its pieces (each one oneDNN runs on ``brgconv_1x1``)
PIECES = {512: (256, 256), 1024: (768, 256), 2048: (768, 768, 256, 256)}
#: set to 1 (or true/yes/on) to keep every stream whole (for comparisons)
OPT_OUT = "DUC_HDC_NO_STREAM_SPLIT"


def stream_state(flags=None, environ=None):
    """``(on, reason)``: whether the fp32 fused graph keeps its residual streams in pieces."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "off (%s is set)" % OPT_OUT
    why_not = no_brgconv_reason(runtime.cpu_flags() if flags is None else flags, environ)
    if why_not:
        return False, why_not
    return True, ("on (fp32, AVX-512: %s-channel residual streams run as %s pieces)" % (
        "/".join(str(w) for w in sorted(PIECES)),
        "; ".join("+".join(str(p) for p in v) for _, v in sorted(PIECES.items()))))


def split_streams(graph, pieces=None, data_shape=(1, 3, 64, 64), lazy=False):
    """Keep every residual stream whose width is a key of ``pieces`` as separate tensors.

    Parameters
    ----------
    graph, data_shape, lazy
        As for :func:`~duc_hdc.inference.splitting.split_input_channels`.
    pieces : dict, optional
        Stream width -> piece widths (default :data:`PIECES`).

    Returns the rewritten graph, unchanged when no stream has such a width.
    """
    sym, args, auxs = graph
    pieces = {int(k): tuple(int(p) for p in v) for k, v in (pieces or PIECES).items()}
    for width, parts in pieces.items():
        if sum(parts) != width or min(parts) <= 0:
            raise ValueError("pieces of a %d-channel stream must be positive and add up to it, "
                             "not %s" % (width, parts))
    arg_shapes, _, _ = sym.infer_shape_partial(data=data_shape)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    doc, nodes, readers = graph_nodes(sym)

    def conv_params(node):
        """(weight name, bias name, weight shape) of an ungrouped, biased convolution whose
        weights are constants, else None."""
        if node["op"] != "Convolution" or len(node["inputs"]) != 3:
            return None
        if int(node.get("attrs", {}).get("num_group", 1)) != 1:
            return None
        wname, bname = (nodes[node["inputs"][k][0]]["name"] for k in (1, 2))
        if wname not in args or bname not in args or shapes.get(wname) is None:
            return None
        return wname, bname, shapes[wname]

    def cuttable(i):
        """A 1x1 convolution to a width with pieces."""
        params = conv_params(nodes[i])
        return (params is not None and params[2][0] in pieces
                and _attr_ints(nodes[i].get("attrs", {}).get("kernel"), "(1, 1)") == (1, 1))

    def summed_only(i):
        return all(r >= 0 and nodes[r]["op"] == "elemwise_add" for r in readers.get(i, [-1]))

    def writes_stream(i, node):
        """A 1x1 convolution to a width with pieces whose output is a residual stream: read
        only by sums whose other input is cut too (already, or a later such convolution; not
        the 3x3 convolution of a basic block, whose stream would have to be joined again for
        the sum). Or one that reads a cut stream and is read only by convolutions and ReLUs
        (``res5``'s 2048 -> 512: whole, it would run on ``jit_1x1`` and reorder its input and
        output)."""
        if not cuttable(i):
            return False
        if summed_only(i):
            return all(src in parts or (src > i and cuttable(src) and summed_only(src))
                       for r in readers[i] for src, _, _ in nodes[r]["inputs"] if src != i)
        return (node["inputs"][0][0] in parts
                and all(r >= 0 and nodes[r]["op"] in ("Activation", "Convolution")
                        for r in readers.get(i, [-1])))

    new_args = dict(args)
    out_nodes = []
    whole = {}   # old node index -> new node index (unpieced outputs)
    parts = {}   # old node index -> list of new node indices, one per piece
    widths = {}  # old node index -> its pieces' widths
    joined = {}  # old node index -> new index of its pieces concatenated

    def add(node):
        out_nodes.append(node)
        return len(out_nodes) - 1

    def var(name, value):
        new_args[name] = value
        return add(dict(op="null", name=name, inputs=[]))

    def entry(src, out, version):
        """The whole tensor ``src`` (its pieces concatenated when it was cut)."""
        if src in parts:
            if src not in joined:
                joined[src] = add(dict(op="Concat", name=nodes[src]["name"] + "_joined",
                                       attrs={"dim": "1", "num_args": str(len(parts[src]))},
                                       inputs=[[p, 0, 0] for p in parts[src]]))
            return [joined[src], 0, 0]
        return [whole[src], out, version]

    def inputs_of(node):
        """[(entry, first channel, end)]: the data input whole, or its pieces."""
        src, out, version = node["inputs"][0]
        if src not in parts:
            return [(entry(src, out, version), None, None)]
        bounds = [0]
        for size in widths[src]:
            bounds.append(bounds[-1] + size)
        return [([p, 0, 0], b, e) for p, b, e in zip(parts[src], bounds, bounds[1:])]

    def conv(node, name, inputs, weight, bias, attrs, total=None):
        """``node`` over ``inputs``: one convolution per piece (weights cut along the input
        channels), accumulated by additions MKLDNN fuses (``sum`` post-op), onto ``total`` (an
        entry of the new graph) when given; the new index."""
        for j, (data, begin, end) in enumerate(inputs):
            tag = name if len(inputs) == 1 else "%s_in%d" % (name, j)
            w = var(tag + "_weight", weight if begin is None else _Chunk(weight, begin, end))
            b = var(tag + "_bias", bias if j == 0 else _Zeros(bias))
            made = add(dict(node, name=tag, attrs=attrs, inputs=[data, [w, 0, 0], [b, 0, 0]]))
            total = [made if total is None else add(dict(
                op="elemwise_add", name="%s_sum%d" % (name, j), inputs=[total, [made, 0, 0]])),
                0, 0]
        return total[0]

    def cut_outputs(i, node):
        """One convolution per piece of the output channels."""
        wname, bname, shape = conv_params(node)
        inputs = inputs_of(node)
        made, begin = [], 0
        for k, size in enumerate(pieces[shape[0]]):
            end = begin + size
            attrs = dict(node.get("attrs", {}), num_filter=str(size))
            made.append(conv(node, "%s_piece%d" % (node["name"], k), inputs,
                             _Chunk(args[wname], begin, end, axis=0),
                             _Chunk(args[bname], begin, end, axis=0), attrs))
            begin = end
        parts[i], widths[i] = made, pieces[shape[0]]

    def read_pieces(node, total=None):
        """A convolution of a cut tensor: one per piece of its input channels, summed (onto
        ``total`` when given)."""
        wname, bname, _ = conv_params(node)
        return conv(node, node["name"], inputs_of(node), args[wname], args[bname],
                    node.get("attrs", {}), total)

    def continues(src):
        """A convolution of a cut tensor read only by a sum: built where the sum is, so that
        its pieces continue the sum's chain (the DUC head's branches: one fused chain)."""
        node = nodes[src]
        return (node["op"] == "Convolution" and node["inputs"][0][0] in parts
                and conv_params(node) is not None and not writes_stream(src, node)
                and [nodes[r]["op"] if r >= 0 else None for r in readers[src]]
                == ["elemwise_add"])

    def per_piece(i, node, sources):
        parts[i] = [add(dict(node, name="%s_piece%d" % (node["name"], k),
                             inputs=[[parts[s][k], 0, 0] for s in sources]))
                    for k in range(len(parts[sources[0]]))]
        widths[i] = widths[sources[0]]

    for i, node in enumerate(nodes):
        sources = [src for src, _, _ in node["inputs"]]
        cut_inputs = [s for s in sources if s in parts]
        if node["op"] == "null":
            whole[i] = add(dict(node))
        elif writes_stream(i, node):
            cut_outputs(i, node)
        elif (node["op"] == "elemwise_add" and len(cut_inputs) == 2
              and widths[cut_inputs[0]] == widths[cut_inputs[1]]):
            per_piece(i, node, sources)
        elif node["op"] == "Activation" and cut_inputs:
            per_piece(i, node, sources)
        elif continues(i):
            continue  # built by its sum
        elif node["op"] == "elemwise_add" and any(continues(s) for s in sources):
            total = None
            for src, out, version in sorted(node["inputs"], key=lambda e: continues(e[0])):
                total = ([read_pieces(nodes[src], total), 0, 0] if continues(src)
                         else entry(src, out, version))
            whole[i] = total[0]
        elif cut_inputs == sources[:1] and conv_params(node) is not None:
            whole[i] = read_pieces(node)
        else:
            whole[i] = add(dict(node, inputs=[entry(*e) for e in node["inputs"]]))
    if not parts:
        return sym, dict(args), dict(auxs)
    heads = [entry(*e) for e in doc["heads"]]
    # the cut weights' originals are no longer read: dropped
    rewritten, new_args = rebuilt_graph(doc, out_nodes, heads, new_args,
                                        evaluate=() if lazy else (_Chunk, _Zeros))
    log.debug("kept %d stream tensor(s) in pieces", len(parts))
    return rewritten, new_args, dict(auxs)
