"""The release graph's structure compared with the built network's, node by node.

Parameter shapes say little about how a layer computes: a stride, a padding, a dilation, the
pooling convention or a BatchNorm epsilon can differ while every array still fits. This module
reads those attributes from two MXNet symbol graphs (the release's ``-symbol.json`` and the
built network traced with ``net(mx.sym.var('data'))``) and compares them:

- every ``Convolution``: kernel, stride, pad, dilate, num_group, no_bias;
- every ``BatchNorm``: eps, fix_gamma, use_global_stats;
- every ``Pooling`` (in graph order): kernel, stride, pad, pool_type, pooling_convention,
  global_pool.

Convolutions and BatchNorms are paired through their parameters (a node's weight or gamma input,
mapped to the release's array name), so the pairing does not depend on node names or order.
"""
import json
import math
import re

from .errors import ConversionError

__all__ = ["read_graph", "compare_structure", "batchnorm_settings"]

# attribute -> (kind, MXNet's default when the node omits it)
_CONV = {"kernel": ("tuple", None), "stride": ("tuple", 1), "pad": ("tuple", 0),
         "dilate": ("tuple", 1), "num_group": ("int", 1), "no_bias": ("bool", False)}
_BN = {"eps": ("float", 1e-3), "fix_gamma": ("bool", True), "use_global_stats": ("bool", False)}
_POOL = {"kernel": ("tuple", None), "stride": ("tuple", 1), "pad": ("tuple", 0),
         "pool_type": ("str", "max"), "pooling_convention": ("str", "valid"),
         "global_pool": ("bool", False)}


def read_graph(path):
    """The symbol JSON at ``path`` as a dict; :class:`ConversionError` naming the file."""
    try:
        with open(path) as f:
            graph = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError("cannot read the release graph %s: %s" % (path, e)) from e
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ConversionError("%s is not an MXNet symbol graph (no 'nodes' list)" % path)
    return graph


def node_attrs(node):
    """A node's attributes (``attrs``; ``param`` / ``attr`` in older MXNet files)."""
    return node.get("attrs") or node.get("param") or node.get("attr") or {}


def _value(kind, text, default, ndim):
    if text is None:
        if default is None or kind != "tuple":
            return default
        return (default,) * ndim
    text = str(text).strip()
    if kind == "tuple":
        values = tuple(int(v) for v in re.findall(r"-?\d+", text))
        if not values:
            return None if default is None else (default,) * ndim
        return values * ndim if len(values) == 1 and ndim > 1 else values
    if kind == "bool":
        return text.lower() in ("true", "1")
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(text)
    return text


def _attributes(node, spec):
    attrs = node_attrs(node)
    kernel = re.findall(r"-?\d+", str(attrs.get("kernel", "")))
    ndim = len(kernel) or 2
    return {key: _value(kind, attrs.get(key), default, ndim)
            for key, (kind, default) in spec.items()}


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):  # float32 round trips: 1e-6 ~ 9.99999997e-07
        return math.isclose(a, b, rel_tol=1e-5)
    return a == b


def _by_parameter(graph, op, rename):
    """op nodes of ``graph`` keyed by the (renamed) name of their second input (weight/gamma)."""
    nodes = graph["nodes"]
    out = {}
    for node in nodes:
        if node.get("op") != op:
            continue
        inputs = node.get("inputs") or []
        if len(inputs) < 2:
            raise ConversionError("%s node %r has no parameter input" % (op, node["name"]))
        param = nodes[inputs[1][0]]["name"]
        out[rename(param)] = node
    return out


def batchnorm_settings(graph):
    """``(eps values, use_global_stats values)`` of the graph's BatchNorm nodes, as sets."""
    eps, frozen = set(), set()
    for node in graph["nodes"]:
        if node.get("op") == "BatchNorm":
            values = _attributes(node, _BN)
            eps.add(values["eps"])
            frozen.add(values["use_global_stats"])
    return eps, frozen


def _compare(release_node, built_node, spec, source):
    want, have = _attributes(release_node, spec), _attributes(built_node, spec)
    for key in spec:
        if not _same(want[key], have[key]):
            raise ConversionError(
                "%s: node %r (%s): %s is %s in the release graph but %s in the built network "
                "(%s); the converted weights would compute something else"
                % (source, release_node["name"], release_node["op"], key, _show(want[key]),
                   _show(have[key]), built_node["name"]))


def _show(value):
    if isinstance(value, tuple):
        return "(%s)" % ", ".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def compare_structure(release, built, names, source="release graph"):
    """Compare the layers of ``release`` and ``built`` (symbol JSON dicts).

    Parameters
    ----------
    release, built : dict
        Symbol graphs (``json.load`` of a ``-symbol.json``; ``json.loads(sym.tojson())``).
    names : dict
        Built parameter name -> release array name (e.g. ``duchdc0_..._conv0_weight`` ->
        ``conv1_1_3x3_s2_weight``).
    source : str
        Names the release graph in messages (its path).

    Returns
    -------
    dict
        op -> number of nodes compared.

    Raises
    ------
    ConversionError
        Naming the release node, the attribute and both values; or a layer without a
        counterpart.
    """
    def rename(param):
        if param not in names:
            raise ConversionError("%s: the built network's parameter %s has no release name"
                                  % (source, param))
        return names[param]

    counts = {}
    for op, spec in (("Convolution", _CONV), ("BatchNorm", _BN)):
        want = _by_parameter(release, op, lambda p: p)
        have = _by_parameter(built, op, rename)
        for key, node in want.items():
            if key not in have:
                raise ConversionError("%s: node %r (%s, parameter %s) has no counterpart in the "
                                      "built network" % (source, node["name"], op, key))
            _compare(node, have[key], spec, source)
        extra = sorted(set(have) - set(want))
        if extra:
            raise ConversionError("%s: the built network has %d %s layer(s) the release graph "
                                  "lacks, first with parameter %s" % (source, len(extra), op,
                                                                      extra[0]))
        counts[op] = len(want)
    want = [n for n in release["nodes"] if n.get("op") == "Pooling"]
    have = [n for n in built["nodes"] if n.get("op") == "Pooling"]
    if len(want) != len(have):
        raise ConversionError("%s: %d Pooling node(s) (%s) in the release graph, %d in the built "
                              "network" % (source, len(want), ", ".join(n["name"] for n in want),
                                           len(have)))
    for release_node, built_node in zip(want, have):
        _compare(release_node, built_node, _POOL, source)
    counts["Pooling"] = len(want)
    return counts
