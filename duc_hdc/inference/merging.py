"""The DUC head's dilated branches rewritten so that no tap is computed twice.

The head sums ``k`` dilated 3x3 convolutions of the same input (the release: rates 6, 12, 18,
24). Every branch has a centre tap at offset (0, 0): ``k`` multiply-adds of the whole input per
output where one would do. With rates ``g, 2g, ..., kg`` the middle rows of all branches
together read the columns ``-kg, ..., -g, 0, g, ..., kg``, every one of them a real tap, so
the sum is rewritten as

* one ``1 x (2k+1)`` convolution, dilation ``(1, g)``: the middle rows of every branch, the
  ``k`` centre taps summed into one, the branches' biases summed;
* per branch of rate ``d``, one ``2 x 3`` convolution, dilation ``(2d, d)``, padding ``(d, d)``:
  its top and bottom rows (rows ``-d`` and ``+d``), no bias,

accumulated by the same fused ``sum`` post-ops. Same value up to float rounding (the order of
the additions changes; tested); ``9k - (k - 1)`` taps instead of ``9k``: 33 of 36 for the
release. oneDNN already skips the taps that fall in the zero padding, so the centre taps,
never padding, are a larger share of the real work: by ``DNNL_VERBOSE`` every tap costs the
same (49 ms on the 64 x 128 map, 2048 -> 320 channels, fp32, AMD EPYC Zen 4), and the four
branches took 0.884 (64 x 128) and 0.876 (128 x 256) of their time once rewritten, median of
alternating rounds (``bench/head.py``).

Applied where oneDNN runs the graph: the fp32 fused graph (``optimized_block``), the bf16
graph (``bf16_graph``), both before the input split (:mod:`.splitting`), whose chunks continue
the chain, and the folded graph INT8 quantizes (``quantize_net``). The whole network took
0.965 (512 x 1024), 0.955 (1024 x 2048) and 0.970 (batch 4) of its unmerged time in fp32, 0.926
in bf16 and 0.992 in int8 (512 x 1024; AMD EPYC Zen 4, ``bench/peers.py``). Not to the exports
for other runtimes (ONNX, the fp32 symbol). Training builds the same layout in its own graph
(``head_merge``, :class:`duc_hdc.models.duc._BranchSum`), the merged weights cut from the
branch parameters so that gradients reach them.
``DUC_HDC_NO_MERGE=1`` turns it off (for comparisons). Rates that are not ``g, 2g, ..., kg``
(the middle row would hold zero taps) are left alone, but for the first branches of the chain
where those are (of rates 1, 2, 5: the branches 1 and 2).

Written by hand: MXNet has no pass for it.
"""
import functools
import logging

import mxnet as mx
import numpy as np

from ..models.duc import merge_state, merged_row, merging_enabled, progression_step
from .compiled import _attr_bool, _attr_ints, _value, graph_nodes, rebuilt_graph
from .splitting import _Zeros

__all__ = ["merge_branch_taps", "merging_enabled", "merge_state"]

log = logging.getLogger(__name__)


def _branch_rate(node, nodes, args):
    """The dilation ``d`` of a head branch: a 3x3, stride-1, ungrouped convolution with bias,
    dilation and padding (d, d), its weight and bias constants; else None."""
    if node["op"] != "Convolution" or len(node["inputs"]) != 3:
        return None
    attrs = node.get("attrs", {})
    if (_attr_ints(attrs.get("kernel"), "(1, 1)") != (3, 3)
            or _attr_ints(attrs.get("stride"), "(1, 1)") != (1, 1)
            or int(attrs.get("num_group", 1)) != 1 or _attr_bool(attrs.get("no_bias", False))
            or attrs.get("layout", "NCHW") not in ("NCHW", "None")):
        return None
    dilate = _attr_ints(attrs.get("dilate"), "(1, 1)")
    pad = _attr_ints(attrs.get("pad"), "(0, 0)")
    if dilate[0] != dilate[1] or pad != dilate:
        return None
    if any(nodes[e[0]]["name"] not in args for e in node["inputs"][1:]):
        return None
    return dilate[0]


def merge_branch_taps(graph, lazy=False):
    """Rewrite every sum of dilated 3x3 branches with rates ``g, 2g, ..., kg`` (k >= 2) that read
    the same input into one middle-row convolution plus a top-and-bottom convolution per branch
    (see the module docstring). Of a chain whose rates are not such, its first branches are
    rewritten where theirs are.

    Parameters
    ----------
    graph : (mx.sym.Symbol, dict, dict)
        A graph with its arg and aux params (values may be lazy: zero-argument callables),
        e.g. from :func:`~duc_hdc.inference.folding.inference_graph`. A branch sum is a chain of
        ``elemwise_add`` whose every input is such a convolution or an inner add of the chain,
        each read by nothing else.
    lazy : bool
        Return the new weights as zero-argument callables (computed when loaded), not arrays.

    Returns
    -------
    (mx.sym.Symbol, dict, dict)
        The rewritten graph; unchanged when no branch sum qualifies.
    """
    sym, args, auxs = graph
    doc, nodes, readers = graph_nodes(sym)

    def leaves(i, into):
        """The convolutions an add chain rooted at ``i`` sums; False if anything else."""
        for src, out, _ in nodes[i]["inputs"]:
            if out != 0 or len(readers.get(src, ())) != 1:
                return False
            if nodes[src]["op"] == "elemwise_add":
                if not leaves(src, into):
                    return False
            elif _branch_rate(nodes[src], nodes, args) is None:
                return False
            else:
                into.append(src)
        return True

    groups = {}  # root add -> its branch convolutions
    inner = set()
    for i in reversed(range(len(nodes))):  # roots before the adds inside them
        if nodes[i]["op"] != "elemwise_add" or i in inner:
            continue
        convs = []
        if not leaves(i, convs) or len({tuple(nodes[c]["inputs"][0][:2]) for c in convs}) != 1:
            continue
        rates = sorted(_branch_rate(nodes[c], nodes, args) for c in convs)
        if progression_step(rates) is None:
            log.debug("branch sum at %s: rates %s are not g, 2g, ..., kg; left alone",
                      nodes[i]["name"], rates)
            continue
        groups[i] = convs
        stack = [i]
        while stack:
            for src, _, _ in nodes[stack.pop()]["inputs"]:
                if nodes[src]["op"] == "elemwise_add":
                    inner.add(src)
                    stack.append(src)
    if not groups:
        return sym, dict(args), dict(auxs)

    new_args = dict(args)
    out_nodes, index = [], {}
    dropped = set(inner)
    for convs in groups.values():
        dropped.update(convs)
    for convs in groups.values():  # their weights and biases, unless something else reads them
        dropped.update(e[0] for c in convs for e in nodes[c]["inputs"][1:]
                       if set(readers[e[0]]) <= dropped)

    def add_node(node):
        out_nodes.append(node)
        return len(out_nodes) - 1

    def conv_node(name, data, template, kernel, dilate, pad):
        w_i = add_node(dict(op="null", name=name + "_weight", inputs=[]))
        b_i = add_node(dict(op="null", name=name + "_bias", inputs=[]))
        attrs = dict(template.get("attrs", {}), kernel=str(kernel), dilate=str(dilate),
                     pad=str(pad))
        return add_node(dict(op="Convolution", name=name, attrs=attrs,
                             inputs=[data, [w_i, 0, 0], [b_i, 0, 0]]))

    def rewrite(root, convs):
        by_rate = {_branch_rate(nodes[c], nodes, args): nodes[c] for c in convs}
        rates = sorted(by_rate)
        g, k = rates[0], len(rates)
        first = by_rate[g]
        src, out, v = first["inputs"][0]
        data = [index[src], out, v]
        weights = [(d, args[nodes[by_rate[d]["inputs"][1][0]]["name"]]) for d in rates]
        biases = [args[nodes[by_rate[d]["inputs"][2][0]]["name"]] for d in rates]
        # named after the branches (the row after the first): ``exclude`` fragments such as
        # int8's DUC_HEAD_LAYERS still find them
        row = "%s_row" % first["name"]
        new_args[row + "_weight"] = _RowWeight([weight for _, weight in weights])
        new_args[row + "_bias"] = _Sum(biases)
        total = [conv_node(row, data, first, (1, 2 * k + 1), (1, g), (0, k * g)), 0, 0]
        for d, weight in weights:
            part = "%s_tb" % by_rate[d]["name"]
            new_args[part + "_weight"] = _TopBottom(weight)
            new_args[part + "_bias"] = _Zeros(biases[0])  # the biases are in the row's
            conv = conv_node(part, data, first, (2, 3), (2 * d, d), (d, d))
            total = [add_node(dict(op="elemwise_add", name=part + "_sum",
                                   inputs=[total, [conv, 0, 0]])), 0, 0]
        return total[0]

    for i, node in enumerate(nodes):
        if i in groups:
            index[i] = rewrite(i, groups[i])
        elif i not in dropped:
            index[i] = add_node(dict(node, inputs=[[index[s], o, v] for s, o, v in
                                                   node["inputs"]]))
    heads = [[index[s], o, v] for s, o, v in doc["heads"]]
    rewritten, new_args = rebuilt_graph(doc, out_nodes, heads, new_args,
                                        evaluate=() if lazy else (_Lazy, _Zeros))
    log.debug("merged the centre taps of %d branch sum(s)", len(groups))
    return rewritten, new_args, dict(auxs)


class _Lazy(object):
    """A weight computed from the graph's constants when asked for (lazy like the folded ones)."""


class _RowWeight(_Lazy):
    """``(O, I, 1, 2k+1)``: the middle rows of the branches (``weights``, in rate order ``g, 2g,
    ..., kg``) as one row kernel, laid out by :func:`~duc_hdc.models.duc.merged_row` (the
    training graph's own)."""

    def __init__(self, weights):
        self.weights = weights

    def __call__(self):
        return merged_row(mx.nd, [mx.nd.slice_axis(_value(w), axis=2, begin=1, end=2)
                                  for w in self.weights])


class _TopBottom(_Lazy):
    """``weight[:, :, [0, 2], :]``: a branch's top and bottom rows."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self):
        w = _value(self.weight).asnumpy()
        return mx.nd.array(np.ascontiguousarray(w[:, :, [0, 2], :]), dtype=w.dtype)


class _Sum(_Lazy):
    """The branches' biases, summed."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __call__(self):
        return functools.reduce(lambda a, b: a + b, (_value(a) for a in self.arrays)).copy()
