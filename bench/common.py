"""Shared pieces of the benchmark scripts: locating the reference graph, timing, reporting."""
import os
import platform
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def reference_symbol():
    """The original release's graph: tests/data (carried in the repository), or
    ``$DUC_HDC_REFERENCE``."""
    candidates = [os.environ.get("DUC_HDC_REFERENCE", ""), os.path.join(REPO, "tests", "data"),
                  os.path.join(REPO, "..", "shared", "reference")]
    for path in candidates:
        full = os.path.join(path, "tusimple_duc_hdc_cityscapes-symbol.json")
        if path and os.path.exists(full):
            return full
    raise SystemExit("reference graph not found in %s; set DUC_HDC_REFERENCE" % candidates)


def parse_size(text):
    """``'HxW'`` -> ``(H, W)``, both multiples of 8 (an argparse ``type``)."""
    import argparse

    h, w = (int(v) for v in text.lower().split("x"))
    if h % 8 or w % 8:
        raise argparse.ArgumentTypeError("sizes must be multiples of 8, got %s" % text)
    return h, w


def machine():
    """One line describing the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d cores, OMP_NUM_THREADS=%s, python %s" % (
        cpu, os.cpu_count(), os.environ.get("OMP_NUM_THREADS"), platform.python_version())


def alternate(candidates, rounds, warmup=1):
    """Time each candidate ``rounds`` times, interleaved (A B C A B C ...) after warm-up.

    candidates: dict name -> zero-argument callable that blocks until its work is done.
    Returns name -> list of seconds.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def summarize(times, baseline):
    """Rows of (name, median s, spread, ratio to baseline's median)."""
    base = statistics.median(times[baseline])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        spread = (max(ts) - min(ts)) / med if med else 0.0
        rows.append((name, med, spread, med / base))
    return rows


def print_table(title, rows, extra_cols=None):
    print("\n## %s\n" % title)
    header = "| candidate | median s | spread | ratio |" + "".join(
        " %s |" % c for c in (extra_cols or {}))
    print(header)
    print("|" + "---|" * (4 + len(extra_cols or {})))
    for name, med, spread, ratio in rows:
        extra = "".join(" %s |" % extra_cols[c].get(name, "") for c in (extra_cols or {}))
        print("| %s | %.3f | %.0f%% | %.3f |%s" % (name, med, 100 * spread, ratio, extra))


def original_runner(x):
    """Inference of the release's graph (tests/data) on ``mx.mod.Module`` for input ``x``:
    ``(run, symbol, label_shape)``; ``run()`` does one forward pass and waits for it."""
    import mxnet as mx

    sym = mx.sym.load(reference_symbol())
    n, _, h, w = x.shape
    label = (n, 16 * (h // 8) * (w // 8))  # r*r sub-pixels of each 1/8 cell (cell width 2)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["seg_loss_label"],
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", x.shape)], label_shapes=[("seg_loss_label", label)],
             for_training=False)
    mod.init_params(mx.init.Xavier())
    batch = mx.io.DataBatch([x], [mx.nd.zeros(label)])

    def run():
        mod.forward(batch, is_train=False)
        mod.get_outputs()[0].wait_to_read()
    return run, sym, label

