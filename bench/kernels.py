"""Which oneDNN kernel runs a 1x1 convolution of each output width, and how fast, against the
same run's GEMM peak (``FullyConnected`` 4096^3): the ceiling of the fp32 graph on this CPU.

oneDNN 2.4 (MXNet 1.9.1) chooses the kernel, and with it the memory layout of the output, by
shape; MXNet offers no choice. ``duc_hdc/inference/streams.py`` keeps the residual streams in
pieces whose widths get ``brgconv_1x1`` (NHWC, the layout of every 3x3 kernel) so that no layout
reorder is left. This script shows the choice and the speed per width.

    OMP_NUM_THREADS=2 python bench/kernels.py [--size 64x128] [--inputs 256,768]
        [--outputs 128,192,...]

Each convolution runs alone (then a 3x3 convolution reads it, as in the network) under
``DNNL_VERBOSE=1`` in a child process; the time is oneDNN's own, the best of four calls.
"""
import argparse
import json
import os
import subprocess
import sys

from common import machine, parse_size

CHILD = r"""
import json, sys
import mxnet as mx
h, w, ic = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for oc in json.loads(sys.argv[4]):
    x = mx.sym.var("x")
    y = mx.sym.Convolution(x, mx.sym.var("w"), num_filter=oc, kernel=(1, 1), no_bias=True)
    y = mx.sym.Convolution(y, mx.sym.var("w2"), num_filter=64, kernel=(3, 3), pad=(1, 1),
                           no_bias=True)
    args = {"w": mx.nd.ones((oc, ic, 1, 1)), "w2": mx.nd.ones((64, oc, 3, 3))}
    ex = y.optimize_for("MKLDNN", args, {}, mx.cpu()).bind(
        mx.cpu(), dict(args, x=mx.nd.ones((1, ic, h, w))), grad_req="null")
    print("=== %d %d" % (ic, oc), flush=True)
    for _ in range(4):
        ex.forward(is_train=False)[0].wait_to_read()
"""

PEAK = r"""
import time
import mxnet as mx
a = mx.nd.random.normal(shape=(4096, 4096)); b = mx.nd.random.normal(shape=(4096, 4096))
for _ in range(3):
    mx.nd.FullyConnected(a, b, num_hidden=4096, no_bias=True).wait_to_read()
times = []
for _ in range(5):
    t = time.perf_counter()
    mx.nd.FullyConnected(a, b, num_hidden=4096, no_bias=True).wait_to_read()
    times.append(time.perf_counter() - t)
print(2.0 * 4096 ** 3 / min(times) / 1e9)
"""


def survey(h, w, ic, outputs):
    """{oc: (kernel, best ms)} of the 1x1 convolutions ``ic -> oc`` on an ``h x w`` map."""
    env = dict(os.environ, DNNL_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(h), str(w), str(ic),
                          json.dumps(outputs)], env=env, capture_output=True, text=True,
                         check=True).stdout
    result, current = {}, None
    for line in out.splitlines():
        if line.startswith("==="):
            current = int(line.split()[2])
        elif current is not None and line.startswith("dnnl_verbose,exec") and \
                ",convolution," in line and "kh1sh1" in line:
            fields = line.split(",")
            kernel, ms = fields[4], float(fields[-1])
            best = result.get(current, (kernel, float("inf")))[1]
            result[current] = (kernel, min(best, ms))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=(64, 128), help="map HxW (default "
                   "64x128: the stride-8 map of a 512x1024 image)")
    p.add_argument("--inputs", default="256,768", help="input widths (default 256,768)")
    p.add_argument("--outputs", default="128,192,256,320,384,448,512,576,640,704,768,832,896,"
                                        "960,1024", help="output widths")
    args = p.parse_args()
    import duc_hdc  # noqa: F401  (process set-up: threads, AMX)
    from duc_hdc import runtime

    h, w = args.size
    outputs = [int(v) for v in args.outputs.split(",")]
    inputs = [int(v) for v in args.inputs.split(",")]
    print("# %s" % machine())
    print("# oneDNN ISA: %s" % runtime.onednn_isa())
    peak = float(subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True,
                                check=True).stdout.strip().splitlines()[-1])
    print("# FullyConnected 4096^3 (sgemm): %.0f GFLOP/s" % peak)
    rows = {ic: survey(h, w, ic, outputs) for ic in inputs}
    print("\n| output channels | %s |" % " | ".join("from %d: kernel, GFLOP/s (of peak)" % ic
                                                    for ic in inputs))
    print("|---|" + "---|" * len(inputs))
    for oc in outputs:
        cells = []
        for ic in inputs:
            kernel, ms = rows[ic].get(oc, ("?", float("nan")))
            gflops = 2.0 * h * w * ic * oc / (ms / 1e3) / 1e9
            cells.append("`%s` %.0f (%.2f)" % (kernel.split(":")[0], gflops, gflops / peak))
        print("| %d | %s |" % (oc, " | ".join(cells)))


if __name__ == "__main__":
    main()
