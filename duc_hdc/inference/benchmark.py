"""``duc-hdc benchmark``: latency, throughput, GFLOP/s and peak memory of one inference path.

Precisions (the same network, weights random unless ``params`` are given), as
:func:`duc_hdc.inference.graphs.inference_runner` builds them for predict and evaluate:

``fp32``
    :func:`duc_hdc.inference.graphs.optimized_block`: BatchNorm folded, MKLDNN subgraph fusion
    (the default inference path of ``Segmenter`` on CPU). With ``graph='plain'``: the network
    hybridized with ``static_alloc=True, static_shape=True``, unfused.
``bf16``
    :func:`duc_hdc.inference.bf16.bf16_block`: folded, AMP bfloat16, MKLDNN-fused (AMX or
    AVX512_BF16 CPUs).
``int8``
    :func:`duc_hdc.inference.int8.quantize_net`, calibrated on random images (speed only; for
    the accuracy cost use ``duc-hdc quantize`` or ``bench/accuracy.py``).

The report names the CPU, whether AMX is on (:mod:`duc_hdc.runtime`) and the ISA oneDNN
dispatches to.

GPU options (``gpus``, ``fp16`` through ``mx.contrib.amp.convert_hybrid_block``, cuDNN
autotuning through ``MXNET_CUDNN_AUTOTUNE_DEFAULT``) are wired but were never measured on the
CPU-only machine this package is developed on; without a GPU they are refused with a message.
"""
import json
import os
import resource
import statistics
import sys
import time

import mxnet as mx
import numpy as np

from .. import runtime
from ..devices import contexts
from .graphs import PRECISIONS
from .merging import merge_state
from .streams import stream_state
from .splitting import split_state

__all__ = ["MODES", "PRECISIONS", "GRAPHS", "resolve_mode", "count_flops", "build_inference",
           "time_inference", "run_benchmark", "peak_rss_mib", "format_report"]

#: the former ``--mode`` spellings -> (precision, graph)
MODES = {"fp32": ("fp32", "plain"), "fused": ("fp32", "fused"), "int8": ("int8", "fused"),
         "bf16": ("bf16", "fused")}
#: ``graph``: the compiled graph of the precision, or (fp32 only) the plain network
GRAPHS = ("fused", "plain")


def resolve_mode(precision=None, graph=None, mode=None):
    """``(precision, graph)`` from ``--precision`` / ``graph``, or from the former ``--mode``
    (fp32 = plain network, fused, int8). Default: ``('fp32', 'fused')``."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError("mode %r: choose one of %s" % (mode, ", ".join(MODES)))
        if precision is not None and MODES[mode][0] != precision:
            raise ValueError("--mode %s and --precision %s contradict each other"
                             % (mode, precision))
        precision, graph = MODES[mode][0], graph or MODES[mode][1]
    precision, graph = precision or "fp32", graph or "fused"
    if precision not in PRECISIONS:
        raise ValueError("--precision %r: choose one of %s" % (precision, ", ".join(PRECISIONS)))
    if graph not in GRAPHS:
        raise ValueError("graph %r: choose one of %s" % (graph, ", ".join(GRAPHS)))
    if graph == "plain" and precision != "fp32":
        raise ValueError("the plain (unfused) network runs in fp32 only, not %s" % precision)
    return precision, graph


def peak_rss_mib():
    """Peak resident memory of this process so far, MiB.

    ``VmHWM`` of ``/proc/self/status`` where there is one (Linux); else ``ru_maxrss``, which
    Linux carries over from the parent across ``execve``, so that a child started by a big
    process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2.0 ** 20 if sys.platform == "darwin" else 1024.0)


def count_flops(sym, data_shape, **input_shapes):
    """Multiply-accumulate FLOPs (2 per MAC) of the convolutions and FC layers of a graph.

    Shapes come from ``infer_shape`` at ``data_shape``; element-wise layers, pooling and
    BatchNorm are not counted (they are a rounding error next to the convolutions). The FLOPs
    the graph computes: the DUC head's zero-padded channels (``padded_channels``) count.

    Parameters
    ----------
    sym : mx.sym.Symbol
        An unfused graph (``Convolution``, ``Deconvolution``, ``FullyConnected`` nodes).
    data_shape : tuple
        Shape of the input ``data``.
    **input_shapes
        Shapes of other inputs (e.g. a label) when the graph needs them.

    Returns
    -------
    int
    """
    internals = sym.get_internals()
    arg_shapes, out_shapes, _ = internals.infer_shape_partial(data=tuple(data_shape),
                                                              **input_shapes)
    outputs = dict(zip(internals.list_outputs(), out_shapes))
    args = dict(zip(internals.list_arguments(), arg_shapes))
    nodes = json.loads(sym.tojson())["nodes"]

    def shape_of(entry):
        # a variable, or an operator's output (e.g. a weight padded inside the graph)
        node = nodes[entry[0]]
        if node["op"] == "null":
            return args.get(node["name"])
        return outputs.get(node["name"] + "_output") or outputs.get(
            "%s_output%d" % (node["name"], entry[1]))

    macs = 0
    for node in nodes:
        op = node["op"]
        if op not in ("Convolution", "Deconvolution", "FullyConnected"):
            continue
        weight = shape_of(node["inputs"][1])
        out = outputs.get(node["name"] + "_output")
        if not weight or not out or 0 in weight or 0 in out:
            raise ValueError("cannot infer the shapes of %s at input %s" % (node["name"],
                                                                             data_shape))
        if op == "Convolution":
            macs += int(np.prod(out, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
        elif op == "Deconvolution":
            data = shape_of(node["inputs"][0])
            macs += int(np.prod(data, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
        else:
            macs += int(np.prod(out, dtype=np.int64)) * int(weight[1])
    return 2 * macs


def _random_images(shape, seed=0):
    return np.random.RandomState(seed).normal(0, 50, shape).astype(np.float32)


def build_inference(net, precision="fp32", shape=None, ctx=None, fp16=False, calib_images=None,
                    graph="fused"):
    """The callable that runs ``net`` in ``precision`` on inputs of ``shape``.

    Parameters
    ----------
    net : DUCHDC
    precision : {'fp32', 'bf16', 'int8'}
        Also the former mode names ('fused', and 'fp32' with ``graph='plain'``).
    shape : tuple
        (N, 3, H, W).
    ctx : mx.Context, optional
    fp16 : bool
        GPU only: float16 with AMP (``mx.contrib.amp.convert_hybrid_block``).
    calib_images : numpy.ndarray, optional
        For 'int8': calibration images (default: two random images at 1/4 of ``shape``'s area;
        the thresholds do not depend on the input size).
    graph : {'fused', 'plain'}

    Returns
    -------
    callable
        ``runner(x) -> NDArray``.
    """
    from .graphs import fp16_block, inference_runner

    if precision == "fused":
        precision = "fp32"
    precision, graph = resolve_mode(precision, graph)
    ctx = ctx or mx.cpu()
    if fp16:
        if precision != "fp32":
            raise ValueError("--fp16 and --precision %s exclude each other" % precision)
        return fp16_block(net, ctx)
    if precision == "int8" and calib_images is None and ctx.device_type == "cpu":
        n, c, h, w = shape
        calib_images = _random_images((2, c, max(8, h // 16 * 8), max(8, w // 16 * 8)), seed=1)
    return inference_runner(net, precision, ctx=ctx, calib_images=calib_images,
                            optimize=graph == "fused")


def time_inference(runner, x, iters, warmup=1):
    """Seconds per call of ``runner(x)`` (blocking), ``warmup`` untimed calls first."""
    for _ in range(warmup):
        runner(x).wait_to_read()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        runner(x).wait_to_read()
        times.append(time.perf_counter() - start)
    return times


def run_benchmark(model, shape, iters=10, mode=None, classes=None, params=None,
                  gpus=None, fp16=False, cudnn_autotune=None, warmup=1, precision=None,
                  graph=None, probe_isa=True, **overrides):
    """Everything ``duc-hdc benchmark`` does; returns a dict of measurements.

    Parameters
    ----------
    model : str
        Model name (``duc-hdc models``); random weights unless ``params``. Or any artifact
        (:func:`duc_hdc.load`); a compiled bf16 / int8 ``PREFIX`` runs at its own precision
        (another ``precision`` is refused) and its FLOPs are those of the network it computes.
    shape : tuple
        (N, 3, H, W), H and W multiples of 8.
    iters : int
        Timed runs after ``warmup`` untimed ones.
    precision : {'fp32', 'bf16', 'int8'}, optional
        Default fp32.
    graph : {'fused', 'plain'}, optional
        fp32 only: 'plain' times the network itself, unfused.
    mode : {'fp32', 'fused', 'int8', 'bf16'}, optional
        The former spelling (``fp32`` = plain network); see :func:`resolve_mode`.
    classes : int, optional
        For a generic model name.
    params : str, optional
        Weights to load.
    gpus, fp16, cudnn_autotune
        See :func:`duc_hdc.devices.contexts`.
    probe_isa : bool
        Report the ISA oneDNN dispatches to (:func:`duc_hdc.runtime.onednn_isa`, a child
        process, cached).
    **overrides
        Further model settings (``base_width``, ...).
    """
    from ..models.network import MODEL_SPECS, build_model, get_model
    from .compiled import InferenceNet
    from .export import parse_shape
    from .graphs import precision_of
    from .loader import load

    asked = precision or (MODES[mode][0] if mode in MODES else None)
    precision, graph = resolve_mode(precision, graph, mode)
    shape = parse_shape(shape)
    if iters < 1:
        raise ValueError("--iters must be >= 1, got %d" % iters)
    ctx = contexts(gpus, fp16=fp16, cudnn_autotune=cudnn_autotune)[0]
    if model in MODEL_SPECS and not params:  # timing: random weights of a model name
        net = get_model(model, ctx=ctx, classes=classes, **overrides)
    else:  # an artifact, or a name with its weights: the one loader
        net = load(model, params=params, classes=classes, overrides=overrides, ctx=ctx)
    compiled = isinstance(net, InferenceNet)
    if compiled:  # a bf16 / int8 PREFIX: runs at its own precision, as predict runs it
        own = precision_of(net)
        if graph == "plain":
            raise ValueError("--plain times the network itself, unfused; %s is a compiled %s "
                             "graph: drop --plain, or give the network's weights (a .params "
                             "file or a zoo name)" % (model, own))
        precision = asked or own  # another precision: inference_runner refuses it in one line
        # FLOPs of the network the graph computes (its fused / quantized operators hide them)
        flops = count_flops(build_model(net.config, initialize=False)(mx.sym.var("data")),
                            shape)
    else:
        flops = count_flops(net(mx.sym.var("data")), shape)
    build_start = time.perf_counter()
    runner = build_inference(net, precision, shape, ctx=ctx, fp16=fp16, graph=graph)
    x = mx.nd.array(_random_images(shape), ctx=ctx)
    times = time_inference(runner, x, iters, warmup=warmup)
    build_s = time.perf_counter() - build_start - sum(times)
    med = statistics.median(times)
    amx = runtime.amx_state()
    # graphs built here on the CPU (a compiled one runs as it was exported): fp32 and bf16 are
    # split and merged, int8 merged (quantize_net) but not split
    built_cpu = graph != "plain" and ctx.device_type == "cpu" and not compiled
    fused_cpu = built_cpu and precision in ("fp32", "bf16")
    return dict(model=model, shape=list(shape), precision=precision, graph=graph,
                compiled=compiled,
                mode=graph if precision == "fp32" else precision, ctx=str(ctx),
                fp16=bool(fp16), iters=iters, warmup=warmup, times=times, median_s=med,
                min_s=min(times), max_s=max(times), spread=(max(times) - min(times)) / med,
                images_per_s=shape[0] / med, gflop=flops / 1e9, gflops_per_s=flops / 1e9 / med,
                peak_rss_mib=peak_rss_mib(), setup_s=build_s,
                omp_threads=os.environ.get("OMP_NUM_THREADS"), cpu=runtime.cpu_model(),
                amx=amx["enabled"], amx_reason=amx["reason"],
                input_split=(split_state(precision=precision)[1] if fused_cpu else None),
                centre_merge=merge_state()[1] if built_cpu else None,
                residual_streams=(stream_state()[1] if fused_cpu and precision == "fp32"
                                  else None),
                onednn_isa=runtime.onednn_isa() if probe_isa else None)


def format_report(r):
    """The lines ``duc-hdc benchmark`` prints."""
    shape = "x".join(map(str, r["shape"]))
    graph = " (%s graph)" % r["graph"] if r.get("graph") and r["precision"] == "fp32" else ""
    if r.get("compiled"):
        graph = " (compiled graph)"
    lines = [
        "model %s, input %s, precision %s%s%s on %s (OMP_NUM_THREADS=%s)"
        % (r["model"], shape, r["precision"], graph, " fp16" if r["fp16"] else "", r["ctx"],
           r["omp_threads"]),
        "cpu: %s; %s" % (r.get("cpu", "?"), r.get("amx_reason", "")),
    ]
    if r.get("onednn_isa"):
        lines.append("oneDNN ISA: %s" % r["onednn_isa"])
    if r.get("input_split"):
        lines.append("input split: %s" % r["input_split"])
    if r.get("centre_merge"):
        lines.append("centre-tap merge: %s" % r["centre_merge"])
    if r.get("residual_streams"):
        lines.append("residual streams: %s" % r["residual_streams"])
    lines += [
        "latency: median %.1f ms, min %.1f ms, max %.1f ms, spread %.0f%% (%d runs after %d "
        "warm-up)" % (1e3 * r["median_s"], 1e3 * r["min_s"], 1e3 * r["max_s"],
                      100 * r["spread"], r["iters"], r["warmup"]),
        "throughput: %.2f images/s" % r["images_per_s"],
        "compute: %.4g GFLOP per batch (conv + FC MACs x 2), %.1f GFLOP/s"
        % (r["gflop"], r["gflops_per_s"]),
        "peak memory: %.0f MiB (process peak RSS)" % r["peak_rss_mib"],
    ]
    return "\n".join(lines)
