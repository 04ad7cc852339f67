"""Fast inference graphs: BatchNorm folding, MKLDNN-fused fp32 and INT8 post-training quantization.

Three ways to run a trained :class:`~duc_hdc.model.network.DUCHDC` faster than the plain
hybridized network, all returning an :class:`InferenceNet` that :class:`duc_hdc.predict.Segmenter`
runs like the network itself (it carries ``classes``, ``cell_width``, ``normalization`` and
``config``) and that accepts any input size whose height and width are multiples of 8:

``fold_batchnorm``
    Every inference BatchNorm (moving statistics, gamma, beta, eps) folded into the weight and
    bias of the convolution before it. MXNet has no stand-alone pass for this: its MKLDNN
    subgraph backend folds BatchNorm only inside its own fused operators, at run time, and only
    on CPU. Folding the graph itself gives a BatchNorm-free graph for every backend (MKLDNN,
    GPU, ONNX) and lets the MKLDNN pass fuse convolution + bias + sum + ReLU directly.
``optimized_block``
    The folded graph partitioned by ``optimize_for('MKLDNN')`` (MXNet's subgraph API): every
    convolution fused with its ReLU and residual sum; the DUC head's dilated convolutions
    rewritten as matrix products over the taps that land inside the feature map
    (:func:`split_head`). The default inference path of ``Segmenter`` on CPU. Equal to the
    plain network within float rounding (1e-4 relative, tested).
``quantize_net``
    INT8 post-training quantization with ``mxnet.contrib.quantization.quantize_net_v2`` on the
    folded graph, calibrated on a few images (``naive``: min/max; ``entropy``: KL thresholds),
    fused by the ``MKLDNN_QUANTIZE`` backend. Saved and loaded with :func:`save_quantized` /
    :func:`load_quantized` (symbol JSON, params, and the ``.json`` settings sidecar).

The networks these functions return hold a *copy* of the weights taken when they are built:
retraining the source network afterwards does not change them.
"""
import json
import logging
import os
import time
import warnings

import mxnet as mx
import numpy as np

from .model.network import write_sidecar

__all__ = ["InferenceNet", "graph_of", "fold_batchnorm", "symbol_block", "optimized_block",
           "quantize_net", "calibration_batch", "calibration_images", "save_quantized",
           "load_quantized", "quantized_prefix", "count_quantized_ops", "run_quantization",
           "mkldnn_available", "DUC_HEAD_LAYERS", "DEFAULT_QUANTIZE_EXCLUDE"]

log = logging.getLogger(__name__)

#: Name fragment of the DUC head's four dilated 3x3 branches (the network's last layers), for
#: ``quantize_net(exclude=...)``.
DUC_HEAD_LAYERS = ("head_c",)

#: Layers kept in fp32 by default when quantizing. Measured on the synthetic Cityscapes val set
#: (trained ResNet-18-DUC-HDC, README "INT8"): quantizing the head too costs no more mIoU than
#: keeping it in fp32, and the head is a third of ResNet-101-DUC-HDC's FLOPs, so all layers are
#: quantized. Pass ``exclude=DUC_HEAD_LAYERS`` to keep the head in fp32.
DEFAULT_QUANTIZE_EXCLUDE = ()

_QUANTIZED_FORMAT = "duc-hdc-int8"


def mkldnn_available():
    """True when this MXNet build has the MKLDNN (oneDNN) CPU backend."""
    return mx.runtime.Features().is_enabled("MKLDNN")


# ------------------------------------------------------------------------------ the container
class InferenceNet(object):
    """An inference-only graph of a DUC-HDC network, callable like the network.

    Parameters
    ----------
    config : dict
        The source network's settings (``net.config``): classes, cell width, normalization.
    kind : str
        What the graph is: ``'fused'`` (fp32, BatchNorm folded, MKLDNN subgraphs),
        ``'folded'`` (fp32, BatchNorm folded, no backend) or ``'int8'``.
    build : callable
        ``build(key) -> gluon.SymbolBlock`` (input ``data``): the graph for the input sizes
        that ``key_of`` maps to ``key``. Blocks share one set of parameters.
    key_of : callable, optional
        ``key_of(input_shape) -> hashable``: which graph variant an input needs (default: one
        graph for every size).
    backend : str, optional
        Subgraph backend applied when a graph is first run (``optimize_for``), e.g. 'MKLDNN'.

    Notes
    -----
    ``net(x)`` takes (N, 3, H, W) float32, normalized with :attr:`normalization`, H and W
    multiples of 8, and returns logits (N, classes, H // cell_width, W // cell_width). Each
    graph variant is partitioned once, at its first call, and cached; a new input size of the
    same variant re-plans memory only (static shapes), no re-export.
    """

    def __init__(self, config, kind, build, key_of=None, backend=None):
        self.config = dict(config)
        self.kind = kind
        self.backend = backend
        self.classes = int(config["classes"])
        self.cell_width = int(config["cell_width"])
        self._build = build
        self._key_of = key_of or (lambda shape: None)
        self._blocks = {}
        self._last = None

    @property
    def normalization(self):
        """The input normalization: dict(mean=(r, g, b), std=(r, g, b) or None), 0..255 scale."""
        std = self.config.get("std")
        return dict(mean=tuple(self.config["mean"]), std=None if std is None else tuple(std))

    @property
    def block(self):
        """The SymbolBlock run last (before any call: the graph of the first variant)."""
        if self._last is None:
            self._last = self._build(self._key_of(None))
        return self._last

    def collect_params(self):
        """The graph's parameters (a ``ParameterDict``, shared by all variants)."""
        return self.block.collect_params()

    def hybridize(self, *args, **kwargs):
        """No-op: the graph is already compiled (present so callers can treat it as a net)."""

    def symbol(self):
        """The graph run last (partitioned once it has run)."""
        return self.block._cached_graph[1]

    def __call__(self, x):
        key = self._key_of(tuple(x.shape))
        block = self._blocks.get(key)
        if block is None:
            block = self._build(key)
            if self.backend:
                block.optimize_for(x, backend=self.backend, static_alloc=True,
                                   static_shape=True)
            else:
                block.hybridize(static_alloc=True, static_shape=True)
            self._blocks[key] = block
        self._last = block
        return block(x)

    def __repr__(self):
        return "InferenceNet(kind=%r, classes=%d, cell_width=%d, backend=%r)" % (
            self.kind, self.classes, self.cell_width, self.backend)


def _constant(block):
    """An InferenceNet ``build`` that always returns ``block``."""
    return lambda key: block


# ------------------------------------------------------------------------------ graphs
def _network_config(net):
    config = getattr(net, "config", None)
    if not isinstance(config, dict) or "classes" not in config:
        raise TypeError("expected a DUCHDC network (with .config), got %s" % type(net).__name__)
    return config


def _param_context(net):
    for param in net.collect_params().values():
        try:
            return param.list_ctx()[0]
        except RuntimeError:
            break
    return mx.cpu()


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


def _attr_bool(value):
    return str(value).lower() in ("true", "1")


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


def _value(array):
    """An array, or the array a lazy entry (a zero-argument callable) computes."""
    return array() if callable(array) else array


def _data_block(sym, params=None):
    """``gluon.SymbolBlock`` of ``sym`` with a float32 input ``data`` (SymbolBlock.imports
    leaves the input untyped, and warns)."""
    return mx.gluon.SymbolBlock(sym, [mx.sym.var("data", dtype="float32")], params=params)


def symbol_block(sym, args, auxs, ctx=None):
    """A ``gluon.SymbolBlock`` (input ``data``) holding ``sym`` with its parameters loaded."""
    ctx = ctx or mx.cpu()
    block = _data_block(sym)
    params = {"arg:%s" % k: v for k, v in args.items()}
    params.update({"aux:%s" % k: v for k, v in auxs.items()})
    block.collect_params().load_dict(params, ctx=ctx, cast_dtype=True, dtype_source="saved")
    return block


def _parameter_dict(arrays, ctx):
    """A ParameterDict holding copies of ``arrays`` (name -> NDArray, or a callable returning
    one), for inference. Entries are removed from ``arrays`` as they are loaded, so that no
    second full copy of the weights is ever held."""
    params = mx.gluon.ParameterDict("")
    for name in sorted(arrays):
        array = _value(arrays.pop(name))
        param = params.get(name, shape=array.shape, dtype=array.dtype, grad_req="null",
                           allow_deferred_init=True)
        param._load_init(array, ctx)
        del array
    return params


# ------------------------------------------------------------------------------ DUC head
def _tuple_attr(attrs, key, default):
    text = attrs.get(key)
    if text is None:
        return default
    return tuple(int(v) for v in text.strip("()[] ").split(",") if v.strip())


def _head_sums(nodes):
    """The ``add_n`` nodes that sum dilated 3x3 'same' convolutions of one input (the DUC /
    ASPP head): list of (add_n index, [conv indices], input entry)."""
    readers = {}
    for node in nodes:
        for src, _, _ in node["inputs"]:
            readers[src] = readers.get(src, 0) + 1
    found = []
    for i, node in enumerate(nodes):
        if node["op"] != "add_n" or len(node["inputs"]) < 2:
            continue
        convs = [src for src, _, _ in node["inputs"]]
        ok = len(set(convs)) == len(convs)
        for c in convs:
            attrs = nodes[c].get("attrs", {})
            ok = ok and nodes[c]["op"] == "Convolution" and readers.get(c) == 1
            if not ok:
                break
            rate = _tuple_attr(attrs, "dilate", (1, 1))
            ok = (_tuple_attr(attrs, "kernel", ()) == (3, 3)
                  and _tuple_attr(attrs, "stride", (1, 1)) == (1, 1)
                  and _tuple_attr(attrs, "pad", (0, 0)) == rate and rate[0] == rate[1]
                  and int(attrs.get("num_group", 1)) == 1
                  and attrs.get("layout", "None") in ("None", "NCHW"))
        entries = {tuple(nodes[c]["inputs"][0][:2]) for c in convs} if ok else set()
        if ok and len(entries) == 1:
            found.append((i, convs, list(entries.pop())))
    return found


def _feature_sizes(sym, data_shape, entries):
    """(H, W) of the given graph entries at input ``data_shape``."""
    internals = sym.get_internals()
    _, shapes, _ = internals.infer_shape_partial(data=tuple(data_shape))
    by_name = dict(zip(internals.list_outputs(), shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    sizes = []
    for src, out in entries:
        node = nodes[src]
        names = ([node["name"]] if node["op"] == "null" else
                 [node["name"] + "_output", node["name"] + "_output%d" % out])
        shape = next((by_name[n] for n in names if n in by_name), None)
        sizes.append(tuple(shape[2:4]) if shape and len(shape) == 4 else None)
    return sizes


def _tap_name(conv_name, ky, kx):
    return "%s_tap%d%d_weight" % (conv_name, ky, kx)


def head_tap_weights(sym, args):
    """The 1x1 weights of the decomposed DUC head (see :func:`split_head`).

    Returns
    -------
    dict
        name -> NDArray: one (O, C) weight per off-centre tap of every branch, the branches'
        centre taps summed into one weight and their biases into one bias.
    """
    nodes = json.loads(sym.tojson())["nodes"]
    out = {}
    for addn, convs, _ in _head_sums(nodes):
        name = nodes[addn]["name"]
        centre, bias = 0, 0
        for c in convs:
            weight = _value(args[nodes[nodes[c]["inputs"][1][0]]["name"]]).asnumpy()
            centre = centre + weight[:, :, 1, 1]
            if len(nodes[c]["inputs"]) > 2:
                bias = bias + _value(args[nodes[nodes[c]["inputs"][2][0]]["name"]]).asnumpy()
            for ky in range(3):
                for kx in range(3):
                    if (ky, kx) != (1, 1):
                        out[_tap_name(nodes[c]["name"], ky, kx)] = mx.nd.array(
                            np.ascontiguousarray(weight[:, :, ky, kx]))
        out[name + "_centre_weight"] = mx.nd.array(centre)
        out[name + "_centre_bias"] = mx.nd.array(np.zeros(centre.shape[0], np.float32) + bias)
    return out


def split_head(sym, feature_size):
    """Rewrite the DUC head's sum of dilated 3x3 convolutions as matrix products over taps.

    A 3x3 convolution with dilation r and padding r is the sum over its nine taps (dy, dx) in
    {-r, 0, r}^2 of a 1x1 convolution of the input shifted by (dy, dx), zero outside. Written
    out this way (by hand: MXNet and oneDNN have no such pass):

    * the four branches' centre taps read the same unshifted input: one product with the
      summed weights (and biases) replaces four;
    * each off-centre tap multiplies only the crop of the input where the tap lands inside
      the map (``slice``), and is padded back with zeros (``Pad``): the products with the zero
      padding that a padded dilated convolution computes (a third of the work at rate 24 on
      the 64 x 128 map of a 512 x 1024 image, a sixth on the 128 x 256 map of 1024 x 2048) are
      not computed, and a tap that never lands inside (rate >= the map size) disappears;
    * the products are ``FullyConnected`` layers on the channels-last map (one transpose of
      the head's input): plain matrix products, where oneDNN runs the dilated convolution as
      im2col + GEMM, and no crop is converted to oneDNN's blocked layout and back.

    Measured on this machine (ResNet-101-DUC-HDC, batch 1, fused graph): 0.80 of the time of
    the dilated head's graph at 512 x 1024 and 0.88 at 1024 x 2048, with less memory.

    The result equals the original sum up to float rounding. The graph depends on which taps
    land inside the map, i.e. on ``feature_size``; :func:`optimized_block` keeps one graph per
    distinct set (one for every input of at least 200 x 200 pixels).

    Parameters
    ----------
    sym : mx.sym.Symbol
        Folded graph (its head weights are replaced by :func:`head_tap_weights`).
    feature_size : list of (int, int)
        (H, W) of each head's input (see ``_feature_sizes``), in graph order.

    Returns
    -------
    mx.sym.Symbol
    """
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    heads = _head_sums(nodes)
    if not heads:
        return sym
    readers = {}
    for node in nodes:
        for src, _, _ in node["inputs"]:
            readers[src] = readers.get(src, 0) + 1
    replace, dropped = {}, set()
    for (addn, convs, entry), (h, w) in zip(heads, feature_size):
        replace[addn] = (convs, entry, h, w)
        for c in convs:
            dropped.add(c)
            for src, _, _ in nodes[c]["inputs"][1:]:
                if readers.get(src) == 1:
                    dropped.add(src)
    index, out_nodes = {}, []

    def emit(node):
        out_nodes.append(node)
        return len(out_nodes) - 1

    for i, node in enumerate(nodes):
        if i in dropped:
            continue
        if i not in replace:
            index[i] = emit(dict(node, inputs=[[index[s], o, v] for s, o, v in node["inputs"]]))
            continue
        convs, (src, out), h, w = replace[i]
        name = node["name"]
        x = [index[src], out, 0]
        num_filter = nodes[convs[0]]["attrs"]["num_filter"]

        def product(inp, weight, bias=None):
            """Channels-last (N, h, w, C) times weight (O, C) [+ bias], back to (N, O, h, w)."""
            inputs = [inp, [emit(dict(op="null", name=weight, inputs=[])), 0, 0]]
            if bias:
                inputs.append([emit(dict(op="null", name=bias, inputs=[])), 0, 0])
            base = weight[:-len("_weight")]
            fc = emit(dict(op="FullyConnected", name=base, inputs=inputs,
                           attrs=dict(num_hidden=num_filter, no_bias=str(bias is None),
                                      flatten="False")))
            return emit(dict(op="transpose", name=base + "_nchw", inputs=[[fc, 0, 0]],
                             attrs=dict(axes="(0, 3, 1, 2)")))

        # Channels-last once, so that each tap is a plain matrix product over a crop
        # (FullyConnected): a convolution would convert every crop to MKLDNN's blocked
        # layout and back, and keep those copies.
        x_last = [emit(dict(op="transpose", name=name + "_nhwc", inputs=[x],
                            attrs=dict(axes="(0, 2, 3, 1)"))), 0, 0]
        total = product(x_last, name + "_centre_weight", name + "_centre_bias")
        for c in convs:
            rate = _tuple_attr(nodes[c]["attrs"], "dilate", (1, 1))[0]
            for ky in range(3):
                for kx in range(3):
                    dy, dx = (ky - 1) * rate, (kx - 1) * rate
                    if (ky, kx) == (1, 1) or abs(dy) >= h or abs(dx) >= w:
                        continue  # the centre is merged; this tap never lands inside
                    tap = _tap_name(nodes[c]["name"], ky, kx)
                    base = tap[:-len("_weight")]
                    begin = "(None, %s, %s, None)" % tuple(d if d > 0 else None for d in (dy, dx))
                    end = "(None, %s, %s, None)" % tuple(d if d < 0 else None for d in (dy, dx))
                    crop = emit(dict(op="slice", name=base + "_crop", inputs=[x_last],
                                     attrs=dict(begin=begin, end=end)))
                    prod = product([crop, 0, 0], tap)
                    pad = (0, 0, 0, 0, max(0, -dy), max(0, dy), max(0, -dx), max(0, dx))
                    term = emit(dict(op="Pad", name=base + "_pad", inputs=[[prod, 0, 0]],
                                     attrs=dict(mode="constant", pad_width=str(pad),
                                                constant_value="0")))
                    # a running sum, tap by tap: an add_n of every tap would keep them all
                    # (and their inputs) alive at once
                    total = emit(dict(op="elemwise_add", name=base + "_sum",
                                      inputs=[[total, 0, 0], [term, 0, 0]]))
        index[i] = total
    graph["nodes"] = out_nodes
    graph["arg_nodes"] = [k for k, n in enumerate(out_nodes) if n["op"] == "null"]
    graph["heads"] = [[index[s], o, v] for s, o, v in graph["heads"]]
    graph.pop("node_row_ptr", None)
    return mx.sym.load_json(json.dumps(graph))


def optimized_block(net, backend="MKLDNN", ctx=None, split_head_taps=True):
    """The fast fp32 inference graph of ``net``: BatchNorm folded (:func:`fold_batchnorm`),
    the DUC head as tap products (:func:`split_head`), MKLDNN subgraphs fused.

    Parameters
    ----------
    net : DUCHDC
        A network with its trained (or initialized) weights.
    backend : str or None
        Subgraph backend for ``optimize_for``: ``'MKLDNN'`` (CPU; ignored with a log line when
        this MXNet build lacks it, or for a GPU context) or None (BatchNorm folding only).
    ctx : mx.Context, optional
        Where the graph runs; default: where ``net``'s parameters live.
    split_head_taps : bool
        Run the DUC head as matrix products over its taps (:func:`split_head`).

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
    sym, args, auxs = fold_batchnorm(net, lazy=True)
    kind = "fused" if backend else "folded"
    arrays = dict(args, **auxs)
    del args, auxs
    nodes = json.loads(sym.tojson())["nodes"]
    heads = _head_sums(nodes)
    if not split_head_taps or not heads:
        params = _parameter_dict(arrays, ctx)
        return InferenceNet(config, kind, _constant(_data_block(sym, params)), backend=backend)
    arrays.update(head_tap_weights(sym, arrays))
    for _, convs, _ in heads:  # every variant runs the taps instead
        for c in convs:
            for src, _, _ in nodes[c]["inputs"][1:]:
                arrays.pop(nodes[src]["name"], None)
    params = _parameter_dict(arrays, ctx)
    largest = [max(_tuple_attr(nodes[c]["attrs"], "dilate", (1, 1))[0] for c in convs)
               for _, convs, _ in heads]
    keys = {}

    def key_of(shape):
        # The graph depends only on which taps land inside each head's input map: its size
        # clipped above the largest shift (one graph for all inputs of >= 200 x 200 pixels).
        shape = shape or (1, 3, 1024, 2048)
        if shape not in keys:
            sizes = _feature_sizes(sym, shape, [entry for _, _, entry in heads])
            keys[shape] = tuple((min(h, r + 1), min(w, r + 1))
                                for (h, w), r in zip(sizes, largest))
        return keys[shape]

    def build(feature_sizes):
        split = split_head(sym, list(feature_sizes))
        return _data_block(split, params)

    return InferenceNet(config, kind, build, key_of=key_of, backend=backend)


# ------------------------------------------------------------------------------ INT8
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
    from .data.transforms import normalize

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

    The network's BatchNorms are folded first (:func:`fold_batchnorm`), then
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
    fp32 = symbol_block(*fold_batchnorm(net), ctx=ctx)
    exclude = list(exclude or ())
    with warnings.catch_warnings():
        # quantize_net_v2 builds its SymbolBlock from an untyped input; the type is float32
        warnings.filterwarnings("ignore", message="Cannot decide type")
        qblock = quantization.quantize_net_v2(
            fp32, quantized_dtype=quantized_dtype, quantize_mode="full",
            exclude_layers_match=exclude, calib_data=calib, calib_mode=calib_mode,
            num_calib_examples=count, ctx=ctx, logger=None)
    qnet = InferenceNet(config, "int8", _constant(qblock))
    qnet.quantization = dict(calib_mode=calib_mode, num_calib=count, exclude=exclude,
                             quantized_dtype=quantized_dtype,
                             calib_size=list(calib.provide_data[0].shape[2:]))
    log.info("quantized %d convolutions to int8 (%s calibration on %d image(s)%s)",
             count_quantized_ops(qnet)["int8_conv"], calib_mode, count,
             ", kept in fp32: %s" % ", ".join(exclude) if exclude else "")
    return qnet


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
    tmp = ".tmp%d" % os.getpid()
    sym.save(sym_path + tmp)
    mx.nd.save(params_path + tmp, params)
    os.replace(sym_path + tmp, sym_path)
    os.replace(params_path + tmp, params_path)
    side = write_sidecar(params_path, qnet.config, path=prefix + ".json",
                         kind=_QUANTIZED_FORMAT,
                         quantization=getattr(qnet, "quantization", {}), **extra)
    return [sym_path, params_path, side]


def quantized_prefix(path):
    """The prefix of the INT8 model ``path`` names (``PREFIX``, ``PREFIX-0000.params`` or
    ``PREFIX-symbol.json``), or None when it names none."""
    path = str(path)
    for suffix in ("-0000.params", "-symbol.json"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    side = path + ".json"
    if not (os.path.isfile(side) and os.path.isfile(path + "-symbol.json")):
        return None
    try:
        with open(side) as f:
            return path if json.load(f).get("kind") == _QUANTIZED_FORMAT else None
    except (OSError, ValueError):
        return None


def load_quantized(prefix, ctx=None):
    """Load an INT8 model written by :func:`save_quantized` as an :class:`InferenceNet`."""
    side = prefix + ".json"
    for path in (prefix + "-symbol.json", prefix + "-0000.params", side):
        if not os.path.isfile(path):
            raise FileNotFoundError("quantized model %s: %s is missing" % (prefix, path))
    with open(side) as f:
        doc = json.load(f)
    if doc.get("kind") != _QUANTIZED_FORMAT or "model" not in doc:
        raise ValueError("%s is not a duc-hdc INT8 model sidecar (kind %r)"
                         % (side, doc.get("kind")))
    block = _data_block(mx.sym.load(prefix + "-symbol.json"))
    block.collect_params().load(prefix + "-0000.params", ctx=ctx or mx.cpu(), cast_dtype=True,
                                dtype_source="saved")
    qnet = InferenceNet(doc["model"], "int8", _constant(block))
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
    from .data import SegRecordDataset

    dataset = SegRecordDataset(rec)
    if len(dataset) == 0:
        raise ValueError("calibration file %s holds no images" % rec)
    if num_calib < 1:
        raise ValueError("--num-calib must be >= 1, got %d" % num_calib)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(num_calib, len(dataset)))
                      .round().astype(int))
    return calibration_batch([dataset[int(i)][0] for i in picks], normalization)


def run_quantization(net, calib_rec, out, num_calib=4, eval_rec=None, calib_mode="naive",
                     exclude=DEFAULT_QUANTIZE_EXCLUDE, dataset_name="cityscapes", limit=None,
                     progress=True):
    """Everything ``duc-hdc quantize`` does: calibrate, quantize, save, and (with
    ``eval_rec``) measure the mIoU of fp32 and int8 with the shared inference path.

    Parameters
    ----------
    net : DUCHDC
        Trained network.
    calib_rec : str
        ``.rec`` file whose images calibrate the int8 ranges (labels unused).
    out : str
        Output prefix: ``out-symbol.json``, ``out-0000.params``, ``out.json``.
    num_calib : int
        Calibration images (spread evenly over the file).
    eval_rec : str, optional
        Labelled ``.rec`` file: evaluate fp32 (:class:`~duc_hdc.predict.Segmenter` default
        path) and int8, whole-image protocol; the mIoUs go into the sidecar.
    calib_mode, exclude
        See :func:`quantize_net`.
    dataset_name : str
        Label table for the evaluation.
    limit : int, optional
        Evaluate the first ``limit`` images only.

    Returns
    -------
    dict
        ``files``, ``ops`` (operator counts), ``quantization`` settings and, with ``eval_rec``,
        ``fp32_miou``, ``int8_miou``, ``miou_change`` (int8 - fp32, in points) and
        ``images``.
    """
    images = calibration_images(calib_rec, num_calib, net.normalization)
    start = time.time()
    qnet = quantize_net(net, images, calib_mode=calib_mode, exclude=exclude)
    result = dict(quantize_s=time.time() - start, quantization=qnet.quantization)
    extra = {}
    if eval_rec:
        from .data import SegRecordDataset
        from .evaluate import evaluate
        from .predict import Segmenter

        dataset = SegRecordDataset(eval_rec)
        scores = {}
        for kind, model in (("fp32", net), ("int8", qnet)):
            metric = evaluate(Segmenter(model), dataset, net.classes, dataset_name=dataset_name,
                              progress=progress, limit=limit)
            scores[kind] = float(metric.get()[1])
        extra = dict(fp32_miou=scores["fp32"], int8_miou=scores["int8"],
                     miou_change=100.0 * (scores["int8"] - scores["fp32"]),
                     images=len(dataset) if limit is None else min(limit, len(dataset)),
                     eval_rec=os.path.abspath(eval_rec))
        log.info("mIoU fp32 %.4f, int8 %.4f (%+.2f points)", scores["fp32"], scores["int8"],
                 extra["miou_change"])
    result["files"] = save_quantized(qnet, out, calib_rec=os.path.abspath(calib_rec), **extra)
    result["ops"] = count_quantized_ops(qnet)
    result.update(extra)
    return result
