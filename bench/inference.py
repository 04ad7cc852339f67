"""Inference speed and memory: our CPU paths against the original graph, same run.

Batch 1, at each size, alternated in one process (A B C ... A B C ...) after a warm-up run:

  original graph   ../shared/reference's symbol on mx.mod.Module (MXNet's executor applies its
                   MKLDNN subgraph fusion to it by default)
  ours fp32        DUCHDC hybridized (static_alloc, static_shape)
  ours fused       duc_hdc.inference.graphs.optimized_block: BatchNorm folded + optimize_for('MKLDNN')
                   (what predict / evaluate run on CPU)
  ours bf16        duc_hdc.inference.graphs.bf16_block: folded, AMP bfloat16, MKLDNN fusion
                   (AMX where the CPU has it; refused on CPUs without AVX512_BF16)
  ours int8        duc_hdc.inference.graphs.quantize_net (naive calibration on 2 random images;
                   speed only, the accuracy cost is measured by `duc-hdc quantize`); for the
                   memory table it is quantized in another process and loaded from its files
  GluonCV DeepLabV3-ResNet-101 and FCN-ResNet-101 (pretrained_base=False, hybridized)

Each is printed as a ratio to the original graph and as a fraction of the machine's fp32
matrix-multiply peak (the best of a 4096^3 mx.nd.dot and FullyConnected, timed in the same run;
FLOPs = 2 x the conv/FC multiply-accumulates from infer_shape). Peak RSS per candidate is
measured first, in separate processes (RSS is process-wide): each builds one candidate and runs
it once; its peak is VmHWM (Linux carries ru_maxrss over from the parent across execve).
All weights are random: speed does not depend on them.

    python bench/inference.py             # 512x1024 and 1024x2048: ~25 min on 2 cores
    python bench/inference.py --sizes 512x1024 --memory-size none             # ~4 min
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import duc_hdc  # noqa: E402,F401  (OMP_NUM_THREADS before mxnet)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import (alternate, machine, original_runner, parse_size, print_table,  # noqa: E402
                    summarize)

#: candidate key -> table name (table order; the first is the baseline)
CANDIDATES = {
    "original": "original graph (Module, MKLDNN)",
    "fp32": "ours fp32 (hybridized)",
    "fused": "ours fused (BN folded + MKLDNN)",
    "bf16": "ours bf16 (BN folded + AMP + MKLDNN)",
    "int8": "ours int8 (MKLDNN)",
    "deeplab": "GluonCV DeepLabV3-ResNet-101",
    "fcn": "GluonCV FCN-ResNet-101",
}
TARGETS = {"fp32": 1.0, "fused": 0.9, "int8": 0.12}
MODEL = "duc_hdc_resnet101_cityscapes"


def _input(h, w, seed=0):
    return mx.nd.array(np.random.RandomState(seed).normal(0, 50, (1, 3, h, w)))


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def quantized(net):
    """Our int8 network: naive calibration on 2 random 256x512 images (the thresholds do not
    depend on the input size; speed does not depend on the weights)."""
    from duc_hdc.inference.graphs import quantize_net

    calib = np.random.RandomState(1).normal(0, 50, (2, 3, 256, 512)).astype(np.float32)
    return quantize_net(net, calib, calib_mode="naive")


def build(key, h, w, int8_model=None):
    """(zero-argument runner that blocks until done, FLOPs) of one candidate at h x w.

    ``int8_model``: load the int8 network from this prefix (as a deployment would) instead of
    quantizing it here.
    """
    from duc_hdc import get_model
    from duc_hdc.inference.benchmark import count_flops
    from duc_hdc.models.network import build_model, resolve_settings
    from duc_hdc.inference.graphs import load_quantized, optimized_block

    x = _input(h, w)
    if key == "original":
        run, sym, label = original_runner(x)
        return run, count_flops(sym, x.shape, seg_loss_label=label)
    if key in ("fp32", "fused", "bf16", "int8"):
        # FLOPs from the graph of a network without weights (no memory spent on them)
        graph = build_model(resolve_settings(MODEL), initialize=False)(mx.sym.var("data"))
        flops = count_flops(graph, x.shape)
        if key == "int8" and int8_model:
            runner = load_quantized(int8_model)
            return (lambda: runner(x).wait_to_read()), flops
        net = get_model(MODEL)
        if key == "fp32":
            net.hybridize(static_alloc=True, static_shape=True)
            runner = net
        elif key == "fused":
            runner = optimized_block(net)
        elif key == "bf16":
            from duc_hdc.inference.graphs import bf16_block

            try:
                runner = bf16_block(net)
            except ValueError as err:  # a CPU without bf16: say so, measure the rest
                print("ours bf16 not measured: %s" % err)
                return None, flops
        else:
            runner = quantized(net)
        if key != "fp32":
            del net  # a deployment keeps the compiled graph only
        return (lambda: runner(x).wait_to_read()), flops
    if key in ("deeplab", "fcn"):
        from gluoncv.model_zoo.deeplabv3 import DeepLabV3
        from gluoncv.model_zoo.fcn import FCN

        cls = DeepLabV3 if key == "deeplab" else FCN
        with warnings.catch_warnings():  # GluonCV re-initializes its parts, noisily
            warnings.simplefilter("ignore")
            net = cls(19, backbone="resnet101", aux=False, pretrained_base=False, height=h,
                      width=w)
            net.initialize(mx.init.Xavier())
        flops = count_flops(_first(net(mx.sym.var("data"))), x.shape)
        net.hybridize(static_alloc=True, static_shape=True)
        return (lambda: _first(net(x)).wait_to_read()), flops
    raise ValueError("unknown candidate %r; choose from %s" % (key, ", ".join(CANDIDATES)))


def matmul_peak(n=4096, repeats=3):
    """Best fp32 GFLOP/s of an n x n x n mx.nd.dot and of FullyConnected (MKLDNN)."""
    a = mx.nd.random.uniform(shape=(n, n))
    b = mx.nd.random.uniform(shape=(n, n))
    ops = {"dot": lambda: mx.nd.dot(a, b),
           "FullyConnected": lambda: mx.nd.FullyConnected(a, b, no_bias=True, num_hidden=n)}
    best = {}
    for name, op in ops.items():
        op().wait_to_read()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            op().wait_to_read()
            seconds.append(time.perf_counter() - start)
        best[name] = 2.0 * n ** 3 / min(seconds) / 1e9
    return best


def load_average():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def child(key, size, int8_model=None):
    """Build one candidate, run it once; print its peak RSS.

    With key 'quantize', quantize our network and save it to ``int8_model`` instead."""
    from duc_hdc import get_model
    from duc_hdc.inference.benchmark import peak_rss_mib
    from duc_hdc.inference.graphs import save_quantized

    if key == "quantize":
        save_quantized(quantized(get_model(MODEL)), int8_model)
        return
    h, w = size
    before = peak_rss_mib()
    run, _ = build(key, h, w, int8_model=int8_model)
    if run is None:
        return
    run()  # static allocation and the oneDNN primitives happen in the first run
    print(json.dumps(dict(candidate=key, peak_rss_mib=peak_rss_mib(), import_rss_mib=before)))


def _run_child(key, size, int8_model=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", key, "--size", "%dx%d" % size]
    if int8_model:
        cmd += ["--int8-model", int8_model]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    if proc.returncode:
        print("memory run of %s failed:\n%s" % (key, proc.stderr[-2000:]))
        return None
    return proc.stdout


def memory_table(keys, size):
    rows = {}
    with tempfile.TemporaryDirectory(prefix="duc_hdc_int8_") as tmp:
        # the int8 model is quantized in a process of its own and loaded from its files,
        # as a deployment would (calibration memory is not inference memory)
        int8_model = os.path.join(tmp, "int8")
        if "int8" in keys and _run_child("quantize", size, int8_model) is None:
            keys = [k for k in keys if k != "int8"]
        for key in keys:
            out = _run_child(key, size, int8_model if key == "int8" else None)
            if out:
                rows[key] = json.loads(out.strip().splitlines()[-1])
    base = rows.get("original", {}).get("peak_rss_mib")
    print("\n## peak RSS at %dx%d, batch 1 (one process per candidate; target: ours <= "
          "original)\n" % size)
    print("| candidate | peak RSS MiB | ratio |")
    print("|---|---|---|")
    for key, r in rows.items():
        ratio = "%.3f" % (r["peak_rss_mib"] / base) if base else ""
        print("| %s | %.0f | %s |" % (CANDIDATES[key], r["peak_rss_mib"], ratio))
    if rows:
        print("\n(after `import mxnet` a process holds %.0f MiB)"
              % min(r["import_rss_mib"] for r in rows.values()))
    return rows


def speed_table(keys, size, rounds):
    h, w = size
    runners, flops = {}, {}
    for key in keys:
        start = time.perf_counter()
        run, flop = build(key, h, w)
        if run is None:
            continue
        runners[CANDIDATES[key]], flops[CANDIDATES[key]] = run, flop
        print("built %s in %.1f s" % (CANDIDATES[key], time.perf_counter() - start), flush=True)
    peak = matmul_peak()
    times = alternate(runners, rounds)
    after = matmul_peak()
    peak = {k: max(v, after[k]) for k, v in peak.items()}
    best = max(peak.values())
    base = CANDIDATES[keys[0]]
    rows = summarize(times, base)
    extra = {"GFLOP": {}, "GFLOP/s": {}, "of peak": {}, "target": {}}
    for name, ts in times.items():
        med = statistics.median(ts)
        extra["GFLOP"][name] = "%.0f" % (flops[name] / 1e9)
        extra["GFLOP/s"][name] = "%.1f" % (flops[name] / 1e9 / med)
        extra["of peak"][name] = "%.0f%%" % (100 * flops[name] / 1e9 / med / best)
    for key, target in TARGETS.items():
        if key in keys:
            extra["target"][CANDIDATES[key]] = "<= %.1f" % target
    print_table("inference %dx%d, batch 1, %d rounds (ratio to the %s)" % (h, w, rounds, base),
                rows, extra)
    print("\nfp32 matmul peak: %s GFLOP/s (4096^3; best of the two = 100%%); int8 counts "
          "the same FLOPs" % ", ".join("%s %.1f" % kv for kv in sorted(peak.items())))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="512x1024,1024x2048",
                   help="HxW list (default 512x1024,1024x2048)")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per size (default 2)")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="subset of %s (the first is the baseline)" % ",".join(CANDIDATES))
    p.add_argument("--memory-size", default="largest",
                   help="HxW of the peak-RSS runs, 'largest' of --sizes (default) or 'none'")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    p.add_argument("--int8-model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.size, args.int8_model)
    keys = [k.strip() for k in args.candidates.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CANDIDATES]
    if unknown:
        p.error("unknown candidate(s) %s; choose from %s" % (unknown, ",".join(CANDIDATES)))
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    start = time.time()
    print("machine: %s" % machine())
    from duc_hdc import runtime

    print("AMX: %s; oneDNN ISA: %s" % (runtime.amx_state()["reason"], runtime.onednn_isa()))
    print("mxnet %s; %s at start (the CPU is shared: figures may be affected by concurrent "
          "load)" % (mx.__version__, load_average()))
    if args.memory_size != "none":
        # first, while this process is still small (children are measured by VmHWM anyway)
        size = max(sizes, key=lambda s: s[0] * s[1]) if args.memory_size == "largest" \
            else parse_size(args.memory_size)
        memory_table(keys, size)
        print("%s" % load_average(), flush=True)
    for size in sizes:
        speed_table(keys, size, args.rounds)
        print("%s" % load_average(), flush=True)
    print("\n%s at the end; total %.0f s" % (load_average(), time.time() - start))


if __name__ == "__main__":
    main()
