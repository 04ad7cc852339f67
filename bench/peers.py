#!/usr/bin/env python
"""Our precisions against ONNX Runtime and OpenVINO on the project's own ONNX export, same run.

Candidates (batch 1 at each size, then batch-4 throughput), rounds alternated across all of
them (A B C ... A B C ...) after one warm-up call each:

  original graph      tests/data/tusimple_duc_hdc_cityscapes-symbol.json on mx.mod.Module
  ours fp32           inference_runner(net, 'fp32'): BatchNorm folded, the head's centre taps
                      computed once (duc_hdc.inference.merging), head split by input
                      channels (duc_hdc.inference.splitting, AVX-512 CPUs), MKLDNN fusion
  ours fp32 no split  the same with DUC_HDC_NO_SPLIT=1 (what the split gains, same run)
  ours fp32 no merge  the same with DUC_HDC_NO_MERGE=1 (what the centre-tap merge gains)
  ours fp32 streams whole  the same with DUC_HDC_NO_STREAM_SPLIT=1 (what duc_hdc.inference.streams
                      gains)
  ours bf16           inference_runner(net, 'bf16'): folded, merged, split, AMP bfloat16, MKLDNN
  ours bf16 no split  the same with DUC_HDC_NO_SPLIT=1
  ours bf16 no merge  the same with DUC_HDC_NO_MERGE=1
  ours int8           inference_runner(net, 'int8'): folded, merged, naive calibration on 2
                      random images
  ours int8 no merge  the same with DUC_HDC_NO_MERGE=1
  ORT fp32            onnxruntime CPUExecutionProvider on duc_hdc.inference.export's ONNX file
  OpenVINO f32/bf16   INFERENCE_PRECISION_HINT f32 / bf16 (bf16 only where the CPU has it)
  OpenVINO int8       NNCF post-training quantization on ours int8's 2 calibration images
                      (half the input's size), then reshaped to the input; if NNCF runs

The peers need numpy 2: they run in bench/.venv-peers (built by `make bench`) in a worker
process (bench/peer_worker.py) driven over a pipe, so that their rounds interleave with ours.
All weights are random (speed does not depend on them); the peers' outputs are checked against
ours fp32 on the same input. Prints the CPU, the AMX state and the oneDNN ISA, one table per
size with the ratios, and the issue-13 targets.

    python bench/peers.py --quick                    # tiny network at 64x128: a smoke test
    python bench/peers.py --sizes 512x1024 --batch4 512x1024 --rounds 3
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import duc_hdc  # noqa: E402,F401  (threads and AMX before mxnet)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import original_runner, parse_size  # noqa: E402
from duc_hdc import runtime  # noqa: E402
from duc_hdc.inference.splitting import split_state  # noqa: E402
from duc_hdc.inference.streams import OPT_OUT as stream_opt_out, stream_state  # noqa: E402

PEERS_PYTHON = os.path.join(HERE, ".venv-peers", "bin", "python")
MODEL = "duc_hdc_resnet101_cityscapes"
QUICK_MODEL = dict(name="duc_hdc_resnet18", classes=19, base_width=8)

#: key -> table name (table order)
CANDIDATES = {
    "original": "original graph (Module, MKLDNN)",
    "fp32": "ours fp32 (fused)",
    "fp32_nosplit": "ours fp32, no input split",
    "fp32_nomerge": "ours fp32, no centre-tap merge",
    "fp32_nostream": "ours fp32, residual streams whole",
    "bf16": "ours bf16",
    "bf16_nosplit": "ours bf16, no input split",
    "bf16_nomerge": "ours bf16, no centre-tap merge",
    "int8": "ours int8",
    "int8_nomerge": "ours int8, no centre-tap merge",
    "ort_fp32": "ONNX Runtime fp32",
    "ov_f32": "OpenVINO f32",
    "ov_bf16": "OpenVINO bf16",
    "ov_int8": "OpenVINO int8 (NNCF)",
}
OURS = ("original", "fp32", "fp32_nosplit", "fp32_nomerge", "fp32_nostream", "bf16",
        "bf16_nosplit", "bf16_nomerge", "int8", "int8_nomerge")
#: what runs without --candidates (fp32 without the input split left out: with the streams in
#: pieces the head reads the 2048 stream's pieces, so the split changes little in fp32)
DEFAULT_CANDIDATES = [k for k in CANDIDATES if k not in ("fp32_nosplit", "bf16_nosplit",
                                                         "bf16_nomerge", "int8_nomerge")]
#: candidate suffix -> the variable that turns its pass off
SWITCHES = {"_nosplit": "DUC_HDC_NO_SPLIT", "_nomerge": "DUC_HDC_NO_MERGE",
            "_nostream": stream_opt_out}
#: issue 13's targets: (numerator, denominator(s) (best of), bound)
TARGETS = [("fp32", ("ort_fp32", "ov_f32"), 0.97), ("fp32", ("original",), 0.9),
           ("bf16", ("ov_bf16",), 0.75), ("int8", ("ov_bf16",), 0.35),
           ("int8", ("original",), 0.12)]


class Peers(object):
    """The worker process in the peers' venv."""

    def __init__(self, python):
        self.proc = subprocess.Popen([python, os.path.join(HERE, "peer_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     universal_newlines=True, bufsize=1)

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the peer worker died (see its messages above)")
        return json.loads(line)

    def close(self):
        try:
            self.ask(cmd="quit")
        except (RuntimeError, OSError, ValueError):
            pass
        self.proc.wait()


def _original(x):
    return original_runner(x)[0]


def build_ours(key, net, x, calib):
    from duc_hdc.inference.graphs import inference_runner

    if key == "original":
        return _original(x)
    precision = key.split("_")[0]
    switch = [var for suffix, var in SWITCHES.items() if key.endswith(suffix)]
    saved = {var: os.environ.get(var) for var in switch}
    os.environ.update({var: "1" for var in switch})
    try:
        runner = inference_runner(net, precision,
                                  calib_images=calib if precision == "int8" else None)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return lambda: runner(x).wait_to_read()


def _rel(a, b):
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-12))


def measure(keys, net, shape, rounds, peers, onnx_path, tmp, notes):
    """name -> list of seconds for the candidates that could be built at ``shape``."""
    from duc_hdc.inference.graphs import inference_runner

    rng = np.random.RandomState(0)
    xn = rng.normal(0, 50, shape).astype(np.float32)
    x = mx.nd.array(xn)
    n, c, h, w = shape
    calib = np.random.RandomState(1).normal(0, 50, (2, c, max(8, h // 16 * 8),
                                                    max(8, w // 16 * 8))).astype(np.float32)
    ref = inference_runner(net, "fp32")(x).asnumpy()
    runs = {}
    for key in keys:
        start = time.perf_counter()
        if key in OURS:
            split_on, split_why = split_state(precision=key.split("_")[0])
            if key.endswith("_nosplit") and not split_on:
                notes.append("%s: not measured (the same graph as without the suffix: %s)"
                             % (CANDIDATES[key], split_why))
                continue
            if key.endswith("_nostream") and not stream_state()[0]:
                notes.append("%s: not measured (the same graph as without the suffix: %s)"
                             % (CANDIDATES[key], stream_state()[1]))
                continue
            try:
                runs[key] = build_ours(key, net, x, calib)
            except ValueError as err:  # bf16 on a CPU without it: said, not measured
                notes.append("%s: %s" % (CANDIDATES[key], err))
                continue
            runs[key]()  # warm-up
        else:
            if peers is None:
                continue
            if key == "ov_bf16" and runtime.bf16_support() is None:
                # OpenVINO ignores the hint there and runs f32: not a bf16 figure
                notes.append("%s: not measured (%s; OpenVINO would run f32)"
                             % (CANDIDATES[key], runtime.no_bf16_reason()))
                continue
            tag = "%s_%dx%dx%d" % (key, n, h, w)
            inp, out, cal = (os.path.join(tmp, tag + s) for s in ("_x.npy", "_y.npy", "_c.npy"))
            np.save(inp, xn)
            # NNCF calibrates on the images ours int8 calibrates on (half the input's size)
            np.save(cal, calib)
            reply = peers.ask(cmd="load", name=tag, kind=key, onnx=onnx_path, input=inp,
                              output=out, calib=cal)
            if "error" in reply:
                notes.append("%s at %dx%d batch %d: not measured (%s)" % (
                    CANDIDATES[key], h, w, n, reply["error"].strip().splitlines()[-1][:300]))
                continue
            diff = _rel(ref, np.load(out))
            notes.append("%s at %dx%d batch %d: max relative difference to ours fp32 %.2g"
                         % (CANDIDATES[key], h, w, n, diff))
            runs[key] = (lambda tag=tag: peers.ask(cmd="run", name=tag)["s"])
            runs[key]()  # warm-up (the load ran it once too)
        print("built %s in %.1f s" % (CANDIDATES[key], time.perf_counter() - start), flush=True)
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            start = time.perf_counter()
            s = run()
            times[key].append(s if key not in OURS else time.perf_counter() - start)
    del runs
    if peers is not None:
        peers.ask(cmd="unload")
    gc.collect()
    return times


def table(title, times, batch):
    med = {k: statistics.median(v) for k, v in times.items()}
    fp32_peers = [med[k] for k in ("ort_fp32", "ov_f32") if k in med]
    cols = [("original", med.get("original")), ("best fp32 peer", min(fp32_peers)
                                                 if fp32_peers else None),
            ("OpenVINO bf16", med.get("ov_bf16"))]
    print("\n## %s\n" % title)
    print("| candidate | median s | images/s | spread | %s |"
          % " | ".join("ratio to %s" % c for c, _ in cols))
    print("|" + "---|" * (4 + len(cols)))
    for key, ts in times.items():
        m = med[key]
        spread = (max(ts) - min(ts)) / m if m else 0.0
        ratios = ["%.3f" % (m / base) if base else "" for _, base in cols]
        print("| %s | %.3f | %.2f | %.0f%% | %s |" % (CANDIDATES[key], m, batch / m,
                                                       100 * spread, " | ".join(ratios)))
    return med


def targets(med):
    print("\nissue 13 targets:")
    for num, dens, bound in TARGETS:
        base = [med[d] for d in dens if d in med]
        if num not in med or not base:
            print("- %s / %s <= %.2f: not measured" % (num, " or ".join(dens), bound))
            continue
        ratio = med[num] / min(base)
        print("- %s / %s <= %.2f: %.3f %s" % (CANDIDATES[num], " or ".join(
            CANDIDATES[d] for d in dens), bound, ratio, "met" if ratio <= bound else "NOT met"))


def load_average():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="512x1024,1024x2048", help="HxW list, batch 1")
    p.add_argument("--batch4", default="512x1024", help="HxW of the batch-4 run, or 'none'")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                   help="comma-separated, of: %s (default: all but fp32_nosplit and the "
                        "bf16 / int8 'no' variants: every candidate holds its graph at once, and "
                        "12 of them at 1024x2048 ran out of 24 GB)" % ", ".join(CANDIDATES))
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a tiny network (ResNet-18 at width 8) at 64x128")
    p.add_argument("--peers-python", default=PEERS_PYTHON,
                   help="python of the peers' venv (default bench/.venv-peers, `make bench`)")
    args = p.parse_args(argv)
    from duc_hdc import get_model
    from duc_hdc.inference.export import export_model

    keys = [k.strip() for k in args.candidates.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CANDIDATES]
    if unknown:
        p.error("unknown candidate(s) %s; choose from %s" % (unknown, ",".join(CANDIDATES)))
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    batch4 = None if args.batch4 == "none" else parse_size(args.batch4)
    if args.quick:
        sizes, batch4 = [(64, 128)], (64, 128)
    started = time.time()
    state = runtime.amx_state()
    print("%s at the start (the CPU may be shared)" % load_average())
    print("machine: %s, %d cores, OMP_NUM_THREADS=%s" % (runtime.cpu_model(), os.cpu_count(),
                                                         os.environ.get("OMP_NUM_THREADS")))
    print("AMX: %s" % state["reason"])  # names "AMX not available" where the CPU lacks it
    print("oneDNN ISA (mxnet %s): %s" % (mx.__version__, runtime.onednn_isa()))
    mx.random.seed(0)
    if args.quick:
        net = get_model(QUICK_MODEL["name"], classes=QUICK_MODEL["classes"],
                        base_width=QUICK_MODEL["base_width"])
        print("network: %s (--quick; the original graph is the full ResNet-101: its ratios "
              "mean nothing here)" % QUICK_MODEL)
    else:
        net = get_model(MODEL)
        print("network: %s, random weights" % MODEL)
    notes = []
    peers = None
    with tempfile.TemporaryDirectory(prefix="duc_hdc_peers_") as tmp:
        if any(k not in OURS for k in keys):
            if not os.path.exists(args.peers_python):
                notes.append("peers not measured: %s is missing (`make bench` builds the venv)"
                             % args.peers_python)
            else:
                start = time.perf_counter()
                onnx_path = export_model(net, os.path.join(tmp, "model"),
                                         (1, 3) + sizes[0], onnx=True, check=False)["files"][-1]
                print("exported %s in %.0f s" % (os.path.basename(onnx_path),
                                                  time.perf_counter() - start), flush=True)
                peers = Peers(args.peers_python)
                print("peers: %s" % json.dumps(peers.ask(cmd="info")), flush=True)
        onnx_path = locals().get("onnx_path")
        try:
            plan = [((1, 3) + s, args.rounds) for s in sizes]
            if batch4:
                plan.append(((4, 3) + batch4, max(1, args.rounds - 1)))
            for shape, rounds in plan:
                times = measure(keys, net, shape, rounds, peers, onnx_path, tmp, notes)
                med = table("%dx%d, batch %d, %d round(s) (median seconds per call)"
                            % (shape[2], shape[3], shape[0], rounds), times, shape[0])
                if shape[0] == 1:
                    targets(med)
                sys.stdout.flush()
        finally:
            if peers is not None:
                peers.close()
    if notes:
        print("\nnotes:\n" + "\n".join("- " + n for n in notes))
    print("\n%s at the end; total %.0f s" % (load_average(), time.time() - started))


if __name__ == "__main__":
    main()
