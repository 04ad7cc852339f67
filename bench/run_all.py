"""`make bench`: every benchmark in one go; tables printed and kept in bench/results/latest.md.

Runs, one after the other (each in its own process, so none inherits another's memory):

  bench/inference.py        inference speed and peak RSS vs the original graph and GluonCV
  bench/peers.py            fp32 / bf16 / int8 vs ONNX Runtime and OpenVINO (bench/.venv-peers)
  bench/head.py             the DUC head alone: plain, centre-tap merged, input-split, both
  bench/train_step.py       training step at crop 512x512 vs the original graph
  bench/data_throughput.py  augmented crops/s of the input pipeline (crop 512 to match the step)
  bench/kernels.py          oneDNN's 1x1 kernel per output width against the sgemm peak

and ends with the loader-to-step ratio (goal: the loader delivers >= 3x the step rate with the
recipes' default worker count). The CPU may be shared: the load average is recorded before and
after each script.

    python bench/run_all.py            # the full run (long on 2 cores: ResNet-101 at 1024x2048)
    python bench/run_all.py --quick    # 512x1024 only, fewer rounds (a few minutes)
"""
import argparse
import datetime
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import machine  # noqa: E402

RESULTS = os.path.join(HERE, "results", "latest.md")
#: data.num_workers of the packaged cityscapes recipe
DEFAULT_WORKERS = 4


def load_average():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "unknown"


def run(script, args):
    """Run a bench script, echoing its output; returns (stdout, seconds, load before/after)."""
    cmd = [sys.executable, os.path.join(HERE, script)] + args
    print("\n$ %s" % " ".join([os.path.relpath(cmd[1], os.path.dirname(HERE))] + args),
          flush=True)
    before, start = load_average(), time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        # keep MXNet's own log lines and warnings out of the tables
        if re.match(r"^\[\d\d:\d\d:\d\d\]|.*Warning|^\s+(v\.initialize|data: None|input_sym)",
                    line):
            continue
        sys.stdout.write(line)
        lines.append(line)
    code = proc.wait()
    if code:
        lines.append("\n**%s exited with status %d**\n" % (script, code))
    return "".join(lines), time.time() - start, before, load_average()


def step_rate(train_out):
    """Images/s of our training step (batch 1) from train_step.py's table."""
    m = re.search(r"\| ours \(Gluon, hybridized\) \| ([0-9.]+) \|", train_out)
    batch = re.search(r"batch (\d+)", train_out)
    return int(batch.group(1)) / float(m.group(1)) if m and batch else None


def loader_rate(data_out, workers):
    """Crops/s of the lossless .rec pipeline with ``workers`` workers."""
    m = re.search(r"^\.rec lossless \(PNG\)\s+%d\s+([0-9.]+)" % workers, data_out, re.M)
    return float(m.group(1)) if m else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="512x1024 only, fewer rounds")
    args = p.parse_args(argv)
    if args.quick:
        plan = [("inference.py", ["--sizes", "512x1024", "--rounds", "1",
                                  "--memory-size", "none"]),
                ("peers.py", ["--quick"]),
                ("head.py", ["--sizes", "512x1024", "--rounds", "1"]),
                ("train_step.py", ["--crop", "512,512", "--rounds", "2"]),
                ("data_throughput.py", ["--images", "8", "--crop", "512", "--batches", "5",
                                        "--workers", str(DEFAULT_WORKERS)]),
                ("kernels.py", ["--inputs", "768", "--outputs", "256,512,768,1024"])]
    else:
        plan = [("inference.py", []),
                ("peers.py", ["--sizes", "512x1024,1024x2048", "--batch4", "512x1024"]),
                ("head.py", ["--sizes", "512x1024,1024x2048"]),
                ("train_step.py", ["--crop", "512,512", "--rounds", "3"]),
                ("data_throughput.py", ["--crop", "512", "--workers",
                                        "2,%d" % DEFAULT_WORKERS]),
                ("kernels.py", [])]
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = []
    outputs = {}
    for script, script_args in plan:
        out, seconds, before, after = run(script, script_args)
        outputs[script] = out
        sections.append("## %s %s\n\n%.0f s; load average %s before, %s after\n\n```\n%s```\n"
                        % (script, " ".join(script_args), seconds, before, after, out))
    steps, crops = step_rate(outputs["train_step.py"]), loader_rate(
        outputs["data_throughput.py"], DEFAULT_WORKERS)
    if steps and crops:
        summary = ("loader %.2f crops/s (%d workers, .rec lossless, crop 512) vs training step "
                   "%.3f images/s (crop 512): %.1fx (goal >= 3x; measured apart, the two "
                   "share the cores when training)" % (crops, DEFAULT_WORKERS, steps,
                                                      crops / steps))
    else:
        summary = "loader / step ratio: could not read both rates from the outputs above"
    print("\n" + summary)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write("# Benchmarks, %s\n\nmachine: %s\n\nThe CPU may be shared with other jobs: "
                "figures can be affected by concurrent load (load averages below).\n\n"
                % (started, machine()))
        f.write("\n".join(sections))
        f.write("\n## summary\n\n%s\n" % summary)
    print("wrote %s" % os.path.relpath(RESULTS))


if __name__ == "__main__":
    main()
