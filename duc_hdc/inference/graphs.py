"""Fast inference graphs: BatchNorm folding, MKLDNN-fused fp32 and INT8 post-training quantization.

Three ways to run a trained :class:`~duc_hdc.models.network.DUCHDC` faster than the plain
hybridized network, all returning an :class:`InferenceNet` that :class:`duc_hdc.inference.segmenter.Segmenter`
runs like the network itself (it carries ``classes``, ``cell_width``, ``normalization`` and
``config``) and that accepts any input size whose height and width are multiples of 8:

``fold_batchnorm``
    Every inference BatchNorm (moving statistics, gamma, beta, eps) folded into the weight and
    bias of the convolution before it. MXNet has no stand-alone pass for this: its MKLDNN
    subgraph backend folds BatchNorm only inside its own fused operators, at run time, and only
    on CPU. Folding the graph itself gives a BatchNorm-free graph for every backend (MKLDNN,
    GPU, ONNX) and lets the MKLDNN pass fuse convolution + bias + sum + ReLU directly.
``fold_constants``
    Every subgraph that reads parameters only (the DUC head's zero-padded weights, see
    :func:`duc_hdc.models.duc.padded_channels`) replaced by a parameter holding its value.
``optimized_block``
    The folded graph partitioned by ``optimize_for('MKLDNN')`` (MXNet's subgraph API): every
    convolution fused with its bias, ReLU and residual sum, the DUC head's branch sums fused
    into its convolutions. The default inference path of ``Segmenter`` on CPU. Equal to the
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
import warnings

import mxnet as mx
import numpy as np

from ..models.sidecar import write_sidecar

__all__ = ["InferenceNet", "graph_of", "fold_batchnorm", "fold_constants", "inference_graph",
           "symbol_block", "optimized_block", "fp16_block",
           "quantize_net", "calibration_batch", "calibration_images", "save_quantized",
           "load_quantized", "count_quantized_ops", "QUANTIZED_KIND",
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

QUANTIZED_KIND = "duc-hdc-int8"


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
        What the graph is: ``'fused'`` (fp32, folded, MKLDNN subgraphs), ``'folded'`` (fp32,
        BatchNorm and constants folded, no backend) or ``'int8'``.
    block : gluon.SymbolBlock
        The graph (input ``data``) with its parameters.
    backend : str, optional
        Subgraph backend applied when the graph is first run (``optimize_for``), e.g. 'MKLDNN'.

    Notes
    -----
    ``net(x)`` takes (N, 3, H, W) float32, normalized with :attr:`normalization`, H and W
    multiples of 8, and returns logits (N, classes, H // cell_width, W // cell_width). The
    graph is partitioned once, at its first call; a new input size re-plans memory only
    (static shapes), no re-partitioning.
    """

    def __init__(self, config, kind, block, backend=None):
        self.config = dict(config)
        self.kind = kind
        self.backend = backend
        self.classes = int(config["classes"])
        self.cell_width = int(config["cell_width"])
        self.block = block
        self._ready = False

    @property
    def normalization(self):
        """The input normalization: dict(mean=(r, g, b), std=(r, g, b) or None), 0..255 scale."""
        std = self.config.get("std")
        return dict(mean=tuple(self.config["mean"]), std=None if std is None else tuple(std))

    def collect_params(self):
        """The graph's parameters (a ``ParameterDict``)."""
        return self.block.collect_params()

    def hybridize(self, *args, **kwargs):
        """No-op: the graph is already compiled (present so callers can treat it as a net)."""

    def symbol(self):
        """The graph (partitioned once it has run)."""
        return self.block._cached_graph[1]

    def __call__(self, x):
        if not self._ready:
            if self.backend:
                self.block.optimize_for(x, backend=self.backend, static_alloc=True,
                                        static_shape=True)
            else:
                self.block.hybridize(static_alloc=True, static_shape=True)
            self._ready = True
        return self.block(x)

    def __repr__(self):
        return "InferenceNet(kind=%r, classes=%d, cell_width=%d, backend=%r)" % (
            self.kind, self.classes, self.cell_width, self.backend)


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
    doc.update(nodes=nodes, heads=heads,
               arg_nodes=[k for k, n in enumerate(nodes) if n["op"] == "null"])
    doc.pop("node_row_ptr", None)
    folded = mx.sym.load_json(json.dumps(doc))
    used = set(folded.list_arguments())
    new_args = {k: v for k, v in new_args.items() if k in used}
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


def optimized_block(net, backend="MKLDNN", ctx=None):
    """The fast fp32 inference graph of ``net``: BatchNorm and the head's weight padding
    folded (:func:`inference_graph`), MKLDNN subgraphs fused.

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
    fp32 = symbol_block(*inference_graph(net), ctx=ctx)
    exclude = list(exclude or ())
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
    block = _data_block(mx.sym.load(prefix + "-symbol.json"))
    block.collect_params().load(prefix + "-0000.params", ctx=ctx or mx.cpu(), cast_dtype=True,
                                dtype_source="saved")
    qnet = InferenceNet(doc["model"], "int8", block)
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
