"""Graph rewriting for inference: BatchNorm folding and constant folding.

``fold_batchnorm``
    Every inference BatchNorm (moving statistics, gamma, beta, eps) folded into the weight and
    bias of the convolution before it. MXNet has no stand-alone pass for this: its MKLDNN
    subgraph backend folds BatchNorm only inside its own fused operators, at run time, and only
    on CPU. Folding the graph itself gives a BatchNorm-free graph for every backend (MKLDNN,
    GPU, ONNX) and lets the MKLDNN pass fuse convolution + bias + sum + ReLU directly.
``fold_constants``
    Every subgraph that reads parameters only (the DUC head's zero-padded weights, see
    :func:`duc_hdc.models.duc.padded_channels`) replaced by a parameter holding its value.
"""
import json
import logging

import mxnet as mx
import numpy as np

from .compiled import _attr_bool, _value, rebuilt_graph

__all__ = ["graph_of", "fold_batchnorm", "fold_constants", "inference_graph"]

log = logging.getLogger(__name__)


def graph_of(net, copy=True):
    """The graph of a Gluon network as ``(symbol, arg_params, aux_params)``, input ``data``.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        With initialized parameters of known shape (``get_model`` builds them so).
    copy : bool
        Copy the parameters to the CPU (else: the network's own arrays).

    Returns
    -------
    (mx.sym.Symbol, dict, dict)
    """
    sym = net(mx.sym.var("data"))
    if isinstance(sym, (list, tuple)):
        sym = sym[0]
    params = {p.name: p for p in net.collect_params().values()}
    args, auxs = {}, {}
    for names, out in ((sym.list_arguments(), args), (sym.list_auxiliary_states(), auxs)):
        for name in names:
            if name != "data":
                data = params[name].data()
                out[name] = data.copyto(mx.cpu()) if copy else data
    return sym, args, auxs


def _as_graph(net_or_graph, copy=True):
    if isinstance(net_or_graph, tuple):
        sym, args, auxs = net_or_graph
        return sym, dict(args), dict(auxs)
    return graph_of(net_or_graph, copy=copy)


def fold_batchnorm(net_or_graph, lazy=False):
    """Fold every inference BatchNorm into the convolution that feeds it.

    ``BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)`` (``gamma = 1`` under ``fix_gamma``). A BatchNorm is folded
    when its input is a Convolution whose output nothing else reads and it normalizes the
    channel axis; any other BatchNorm stays (and is logged). Written by hand: MXNet folds
    BatchNorm only inside the MKLDNN backend's fused operators (see the module docstring).

    Parameters
    ----------
    net_or_graph : HybridBlock or (Symbol, dict, dict)
        A network (traced with :func:`graph_of`) or a graph with its arg and aux params.

    lazy : bool
        Return the folded conv weights and biases as zero-argument callables that compute them
        (for loading them one at a time), not as arrays.

    Returns
    -------
    (mx.sym.Symbol, dict, dict)
        The folded graph, its arg params (conv weights rescaled, conv biases added, BatchNorm
        parameters removed) and its aux params (BatchNorm statistics removed).
    """
    sym, args, auxs = _as_graph(net_or_graph, copy=not lazy)
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    uses = {}
    for node in nodes:
        for src, out, _ in node["inputs"]:
            uses[(src, out)] = uses.get((src, out), 0) + 1
    for src, out, _ in graph["heads"]:
        uses[(src, out)] = uses.get((src, out), 0) + 1

    folds = {}  # BatchNorm index -> Convolution index
    for i, node in enumerate(nodes):
        if node["op"] != "BatchNorm":
            continue
        attrs = node.get("attrs", {})
        src = node["inputs"][0][0]
        reason = None
        if nodes[src]["op"] != "Convolution":
            reason = "its input is %s, not a Convolution" % nodes[src]["op"]
        elif sum(v for (s, _), v in uses.items() if s == src) != 1:
            reason = "its convolution's output has other readers"
        elif int(attrs.get("axis", 1)) != 1:
            reason = "it normalizes axis %s" % attrs.get("axis")
        elif uses.get((i, 1)) or uses.get((i, 2)):
            reason = "its batch mean / variance outputs are used"
        if reason:
            log.info("BatchNorm %s not folded: %s", node["name"], reason)
            continue
        folds[i] = src

    new_args = dict(args)
    new_auxs = dict(auxs)
    bias_of = {}  # Convolution index -> name of the bias it gets
    for bn, conv in folds.items():
        bn_node, conv_node = nodes[bn], nodes[conv]
        attrs = bn_node.get("attrs", {})
        names = [nodes[k]["name"] for k, _, _ in bn_node["inputs"][1:5]]
        weight_name = nodes[conv_node["inputs"][1][0]]["name"]
        has_bias = not _attr_bool(conv_node.get("attrs", {}).get("no_bias", "False"))
        if has_bias:
            bias_name = nodes[conv_node["inputs"][2][0]]["name"]
        else:
            bias_name = conv_node["name"] + "_folded_bias"
            bias_of[conv] = bias_name
        # computed when asked for (``lazy``): a caller that loads the weights one by one never
        # holds a second full copy of the network
        fold = _BatchNormFold([args.get(n, auxs.get(n)) for n in names],
                              _attr_bool(attrs.get("fix_gamma", "True")),
                              float(attrs.get("eps", 1e-3)), args[weight_name],
                              args[bias_name] if has_bias else None)
        new_args[weight_name] = fold.weight
        new_args[bias_name] = fold.bias
        for name in names:
            new_args.pop(name, None)
            new_auxs.pop(name, None)

    # Rebuild the node list: folded BatchNorms (and their parameter nodes) dropped, a bias
    # variable inserted before each convolution that gains one, inputs renumbered.
    dropped = set(folds)
    for bn in folds:
        for k, _, _ in nodes[bn]["inputs"][1:5]:
            if sum(v for (s, _), v in uses.items() if s == k) == 1:
                dropped.add(k)
    index = {}  # old index -> new index (a folded BatchNorm maps to its convolution)
    out_nodes = []
    for i, node in enumerate(nodes):
        if i in folds:
            index[i] = index[folds[i]]
            continue
        if i in dropped:
            continue
        node = dict(node, inputs=[[index[s], o, v] for s, o, v in node["inputs"]])
        if i in bias_of:
            out_nodes.append(dict(op="null", name=bias_of[i], inputs=[]))
            node["inputs"].append([len(out_nodes) - 1, 0, 0])
            node["attrs"] = dict(node.get("attrs", {}), no_bias="False")
        index[i] = len(out_nodes)
        out_nodes.append(node)
    graph["nodes"] = out_nodes
    graph["arg_nodes"] = [k for k, n in enumerate(out_nodes) if n["op"] == "null"]
    graph["heads"] = [[index[s], o, v] for s, o, v in graph["heads"]]
    graph.pop("node_row_ptr", None)
    folded = mx.sym.load_json(json.dumps(graph))
    log.debug("folded %d BatchNorm layers into convolutions", len(folds))
    if not lazy:
        new_args = {k: _value(v) for k, v in new_args.items()}
    return folded, new_args, new_auxs


class _BatchNormFold(object):
    """The folded weight and bias of one convolution + BatchNorm pair, computed on demand."""

    def __init__(self, bn_arrays, fix_gamma, eps, weight, bias):
        self.bn_arrays, self.fix_gamma, self.eps = bn_arrays, fix_gamma, eps
        self.source_weight, self.source_bias = weight, bias

    def _scale(self):
        gamma, _, _, var = [a.asnumpy().astype(np.float64) for a in self.bn_arrays]
        if self.fix_gamma:
            gamma = np.ones_like(gamma)
        return gamma / np.sqrt(var + self.eps)

    def weight(self):
        scale = self._scale().astype(np.float32)
        weight = self.source_weight.asnumpy()
        weight *= scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        return mx.nd.array(weight)

    def bias(self):
        _, beta, mean, _ = [a.asnumpy().astype(np.float64) for a in self.bn_arrays]
        bias = 0.0 if self.source_bias is None else self.source_bias.asnumpy()
        return mx.nd.array(((bias - mean) * self._scale() + beta).astype(np.float32))



# ------------------------------------------------------------------------------ constants
def fold_constants(graph):
    """Replace every subgraph that reads parameters only by a parameter holding its value.

    The DUC head pads its weights with zero rows inside the graph
    (:class:`~duc_hdc.models.duc.PaddedConv2D`); for inference those are constants. Folded,
    the convolutions read plain weight variables, which MKLDNN's fused operators cache and
    ``quantize_net_v2`` quantizes, and nothing is recomputed per call. Written by hand: MXNet
    has no constant-folding pass.

    Parameters
    ----------
    graph : (mx.sym.Symbol, dict, dict)
        A graph with its arg and aux params (values may be lazy: zero-argument callables).

    Returns
    -------
    (mx.sym.Symbol, dict, dict)
        The graph with each folded subgraph replaced by a variable named after its node;
        arg params gain the folded values (lazy) and lose the parameters nothing reads now.
    """
    sym, args, auxs = graph
    internals = sym.get_internals()
    outputs = internals.list_outputs()
    doc = json.loads(sym.tojson())
    nodes = doc["nodes"]
    constant = []
    for node in nodes:
        if node["op"] == "null":
            constant.append(node["name"] in args)
        else:
            constant.append(all(constant[src] for src, _, _ in node["inputs"]))
    # the constant entries that a computed node (or the output) reads: the ones to evaluate
    # (single-output operators: the padding's concat; others are left to run)
    needed = {(src, out) for node, const in zip(nodes, constant) if not const
              for src, out, _ in node["inputs"] if constant[src] and nodes[src]["op"] != "null"}
    needed |= {(src, out) for src, out, _ in doc["heads"] if constant[src]}
    needed = {(src, out) for src, out in needed
              if out == 0 and nodes[src]["name"] + "_output" in outputs}
    if not needed:
        return sym, dict(args), dict(auxs)
    new_args = dict(args)
    replace = {}
    for src, out in sorted(needed):
        name = nodes[src]["name"]
        entry = internals[outputs.index(name + "_output")]

        def compute(entry=entry):
            inputs = {n: _value(args[n]) for n in entry.list_arguments()}
            return entry.eval(ctx=mx.cpu(), **inputs)[0]
        new_args[name] = compute
        replace[(src, out)] = name
    # new node list: folded entries become variables (one each, however many readers); nodes
    # nothing reads any more are dropped
    rebuilt, index, variables = [], {}, {}

    def entry(src, out, v):
        if (src, out) not in replace:
            return [index[src], out, v]
        if (src, out) not in variables:
            rebuilt.append(dict(op="null", name=replace[(src, out)], inputs=[]))
            variables[(src, out)] = len(rebuilt) - 1
        return [variables[(src, out)], 0, 0]

    for i, node in enumerate(nodes):
        inputs = [entry(*e) for e in node["inputs"]]
        index[i] = len(rebuilt)
        rebuilt.append(dict(node, inputs=inputs))
    heads = [entry(*e) for e in doc["heads"]]
    nodes, heads = _reachable(rebuilt, heads)
    folded, new_args = rebuilt_graph(doc, nodes, heads, new_args)
    log.debug("folded %d constant subgraph(s) into parameters", len(replace))
    return folded, new_args, dict(auxs)


def _reachable(nodes, heads):
    """The nodes the heads depend on, in their order, renumbered (and the heads)."""
    keep = set()
    stack = [src for src, _, _ in heads]
    while stack:
        i = stack.pop()
        if i not in keep:
            keep.add(i)
            stack.extend(src for src, _, _ in nodes[i]["inputs"])
    index = {old: new for new, old in enumerate(sorted(keep))}
    out = [dict(nodes[i], inputs=[[index[s], o, v] for s, o, v in nodes[i]["inputs"]])
           for i in sorted(keep)]
    return out, [[index[s], o, v] for s, o, v in heads]


def inference_graph(net, lazy=False):
    """The graph inference runs: BatchNorm folded (:func:`fold_batchnorm`), then parameter-only
    subgraphs folded (:func:`fold_constants`). Returns ``(symbol, arg_params, aux_params)``;
    with ``lazy`` the folded values are zero-argument callables."""
    sym, args, auxs = fold_constants(fold_batchnorm(net, lazy=True))
    if not lazy:
        args = {k: _value(v) for k, v in args.items()}
    return sym, args, auxs

