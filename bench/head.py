#!/usr/bin/env python
"""The DUC head alone: its four dilated branches plain, centre-tap merged, input-split, both.

The head of ResNet-101-DUC-HDC (2048 input channels, 19 classes x 16 sub-pixels padded to 320
outputs, rates 6, 12, 18, 24) on the stride-8 map of an input size, random weights, fused by
MKLDNN, fp32. The variants are the package's own passes on the same graph
(``duc_hdc.inference.merging.merge_branch_taps``, ``duc_hdc.inference.splitting``), timed in
alternating rounds; each is checked against the plain head.

    python bench/head.py --sizes 512x1024,1024x2048 --rounds 5
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import duc_hdc  # noqa: E402,F401  (threads and AMX before mxnet)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import alternate, machine, parse_size  # noqa: E402
from duc_hdc import runtime  # noqa: E402
from duc_hdc.inference.compiled import symbol_block  # noqa: E402
from duc_hdc.inference.merging import merge_branch_taps  # noqa: E402
from duc_hdc.inference.splitting import split_input_channels  # noqa: E402

RATES = (6, 12, 18, 24)
IN_CHANNELS, OUT_CHANNELS = 2048, 320


def head_graph(seed=0):
    """The branch sum as the folded inference graph has it: a chain of elemwise_add."""
    rng = np.random.RandomState(seed)
    data, total, args = mx.sym.var("data"), None, {}
    for i, rate in enumerate(RATES):
        name = "head_c%d_fwd" % i
        args[name + "_weight"] = mx.nd.array(
            rng.normal(0, 0.01, (OUT_CHANNELS, IN_CHANNELS, 3, 3)).astype(np.float32))
        args[name + "_bias"] = mx.nd.array(rng.normal(0, 1, OUT_CHANNELS).astype(np.float32))
        conv = mx.sym.Convolution(data, mx.sym.var(name + "_weight"), mx.sym.var(name + "_bias"),
                                  kernel=(3, 3), dilate=(rate, rate), pad=(rate, rate),
                                  num_filter=OUT_CHANNELS, name=name)
        total = conv if total is None else mx.sym.elemwise_add(total, conv)
    return total, args, {}


def runner(graph, shape):
    sym, args, auxs = graph
    block = symbol_block(sym.optimize_for("MKLDNN"), args, auxs)
    block.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.array(np.random.RandomState(1).normal(0, 1, shape).astype(np.float32))
    return lambda: block(x).wait_to_read(), lambda: block(x).asnumpy()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="512x1024", help="input HxW list (the head runs at 1/8)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print("machine: %s" % machine())
    print("AMX: %s" % runtime.amx_state()["reason"])
    print("oneDNN ISA (mxnet %s): %s" % (mx.__version__, runtime.onednn_isa()))
    plain = head_graph()
    merged = merge_branch_taps(plain)
    graphs = {"plain": plain, "merged": merged,
              "split": split_input_channels(plain, data_shape=(1, IN_CHANNELS, 8, 8)),
              "merged + split": split_input_channels(merged, data_shape=(1, IN_CHANNELS, 8, 8))}
    for text in args.sizes.split(","):
        h, w = parse_size(text)
        shape = (1, IN_CHANNELS, h // 8, w // 8)
        runs = {name: runner(graph, shape) for name, graph in graphs.items()}
        want = runs["plain"][1]()
        diffs = {name: float(np.abs(out() - want).max() / np.abs(want).max())
                 for name, (_, out) in runs.items()}
        times = alternate({name: run for name, (run, _) in runs.items()}, args.rounds)
        base = statistics.median(times["plain"])
        print("\n## the head at %dx%d (map %dx%d), %d rounds\n" % (h, w, h // 8, w // 8,
                                                                    args.rounds))
        print("| variant | median s | spread | ratio to plain | max rel diff to plain |")
        print("|---|---|---|---|---|")
        for name, ts in times.items():
            med = statistics.median(ts)
            print("| %s | %.3f | %.0f%% | %.3f | %.1e |" % (name, med, 100 * (max(ts) - min(ts))
                                                           / med, med / base, diffs[name]))


if __name__ == "__main__":
    main()
