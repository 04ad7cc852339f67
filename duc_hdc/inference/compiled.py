"""The compiled inference graph container and the helpers that build one.

:class:`InferenceNet` is what every fast path returns (:mod:`.graphs` fused fp32,
:mod:`.bf16`, :mod:`.int8`): an inference-only ``SymbolBlock`` callable like the network,
carrying the network's ``config`` (classes, cell width, normalization).
"""
import json

import mxnet as mx
import numpy as np

__all__ = ["InferenceNet", "symbol_block", "mkldnn_available"]


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
        BatchNorm and constants folded, no backend), ``'bf16'`` (folded, bfloat16, MKLDNN
        subgraphs) or ``'int8'``.
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
                self.block = _partitioned(self.block, self.backend)
            self.block.hybridize(static_alloc=True, static_shape=True)
            self._ready = True
        out = self.block(x)
        if out.dtype != np.float32:  # a reduced-precision graph's output: logits are float32
            out = out.astype("float32")
        return out

    def __repr__(self):
        return "InferenceNet(kind=%r, classes=%d, cell_width=%d, backend=%r)" % (
            self.kind, self.classes, self.cell_width, self.backend)


# ------------------------------------------------------------------------------ graphs
def _partitioned(block, backend):
    """``block`` (a SymbolBlock) with its graph partitioned for ``backend`` (MXNet's subgraph
    API), the same parameters.

    The symbol is partitioned without its arguments, not with ``block.optimize_for(x)``: given
    the arguments, MXNet 1.9.1 checks them against the partitioned graph by position and fails
    on a chain of fused convolution sums whose weights differ in shape ("Error in operator
    sg_mkldnn_conv_1: ... Shape inconsistent, Provided = [16,16,1,2], inferred shape =
    (16,16,2,3)"; equal shapes pass unnoticed); :mod:`.splitting` builds such chains.
    """
    inputs, out = block._cached_graph
    return mx.gluon.SymbolBlock(out.optimize_for(backend), inputs,
                                params=block.collect_params())


def _network_config(net):
    if isinstance(net, InferenceNet):  # its graph is compiled: the passes need the network
        raise ValueError("expected a network with its weights, got a compiled %s graph "
                         "(InferenceNet): build from the network (its .params or zoo name)"
                         % net.kind)
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


def _value(array):
    """An array, or the array a lazy entry (a zero-argument callable) computes."""
    return array() if callable(array) else array


def _data_block(sym, params=None):
    """``gluon.SymbolBlock`` of ``sym`` with a float32 input ``data`` (SymbolBlock.imports
    leaves the input untyped, and warns)."""
    return mx.gluon.SymbolBlock(sym, [mx.sym.var("data", dtype="float32")], params=params)


def graph_symbol(path):
    """The graph in ``path`` (an export's ``PREFIX-symbol.json``); ValueError naming the file
    when it is not an MXNet graph with an input ``data`` (truncated, damaged, another file)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not any(
                isinstance(node, dict) and node.get("name") == "data" and node.get("op") == "null"
                for node in doc["nodes"]):
            raise ValueError("no graph")
        return mx.sym.load_json(text)
    except (ValueError, UnicodeDecodeError, mx.base.MXNetError):
        raise ValueError("%s is not an MXNet graph with an input 'data' (truncated or damaged?); "
                         "export it again" % path) from None


def load_graph_files(prefix, ctx=None):
    """``PREFIX-symbol.json`` with ``PREFIX-0000.params`` as a ``SymbolBlock`` (input ``data``):
    a compiled (bf16, INT8) export. A damaged or mismatched file raises one ValueError naming
    it (MXNet's own text says only "Invalid NDArray file format")."""
    sym_path, params_path = prefix + "-symbol.json", prefix + "-0000.params"
    block = _data_block(graph_symbol(sym_path))
    try:
        block.collect_params().load(params_path, ctx=ctx or mx.cpu(), cast_dtype=True,
                                    dtype_source="saved")
    except (AssertionError, mx.base.MXNetError, RuntimeError, ValueError):
        raise ValueError("%s does not fit %s (truncated or from another export?); export it "
                         "again" % (params_path, sym_path)) from None
    return block


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


def _attr_bool(value):
    return str(value).lower() in ("true", "1")


def graph_nodes(sym):
    """``(doc, nodes, readers)`` of a graph: its JSON document, the document's node list, and
    node index -> the indices of the nodes that read it (-1 for a graph output)."""
    doc = json.loads(sym.tojson())
    readers = {}
    for i, node in enumerate(doc["nodes"]):
        for src, _, _ in node["inputs"]:
            readers.setdefault(src, []).append(i)
    for src, _, _ in doc["heads"]:
        readers.setdefault(src, []).append(-1)
    return doc, doc["nodes"], readers


def rebuilt_graph(doc, nodes, heads, args, evaluate=()):
    """``(symbol, args)`` of a rewritten graph: ``doc`` (from :func:`graph_nodes`) with new
    ``nodes`` and ``heads``; ``args`` kept only where the graph still reads them, and values
    that are instances of the ``evaluate`` classes (lazy weights) computed."""
    doc = dict(doc, nodes=nodes, heads=heads,
               arg_nodes=[k for k, n in enumerate(nodes) if n["op"] == "null"])
    doc.pop("node_row_ptr", None)
    sym = mx.sym.load_json(json.dumps(doc))
    used = set(sym.list_arguments())
    return sym, {k: (v() if isinstance(v, evaluate) else v) for k, v in args.items() if k in used}


def _attr_ints(value, default):
    """A tuple attribute of a graph node (``'(3, 3)'``) as ints; ``default`` when absent."""
    return tuple(int(v) for v in str(value or default).strip("()[] ").split(",") if v.strip())
