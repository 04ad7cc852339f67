"""What a run reports: its log file, metrics.jsonl rows, the progress bar, the curves."""
import json
import logging
import os

from ..fileio import atomic_path, atomic_write, read_jsonl

log = logging.getLogger(__name__)


def setup_file_log(run_dir):
    """Log ``duc_hdc`` to ``run_dir/train.log`` too; returns the handler (remove it after)."""
    handler = logging.FileHandler(os.path.join(run_dir, "train.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("duc_hdc").addHandler(handler)
    return handler


def progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)


def append_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def metrics_after(row, iteration, epoch):
    """True when metrics.jsonl ``row`` was logged after the checkpoint at (``iteration``,
    ``epoch``): a training row of a later iteration, a validation of a later epoch (the
    checkpoint at an epoch's end follows its validation; one inside the epoch precedes it)."""
    if not isinstance(row, dict):
        return False
    if row.get("kind") == "val" and isinstance(row.get("epoch"), int) and row["epoch"] > epoch:
        return True
    return isinstance(row.get("iteration"), int) and row["iteration"] > iteration


def truncate_metrics(path, state):
    """Resuming from the checkpoint ``state`` (its ``iteration`` and ``epoch``): drop the rows
    of ``path`` (metrics.jsonl) logged after it, which the resumed run logs again, so every
    iteration appears once. Rewritten atomically, and only when a row goes; a line cut short
    by a kill (not JSON) goes too. Returns the number of lines dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept, dropped, broken = [], 0, 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            broken += 1
            continue
        if metrics_after(row, int(state["iteration"]), int(state["epoch"])):
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    if not dropped and not broken:
        return 0
    with atomic_write(path) as f:
        f.writelines(kept)
    log.info("resume: dropped %d row(s) of %s logged after iteration %d%s (logged again as "
             "the run continues)", dropped, os.path.basename(path), state["iteration"],
             ", and %d unreadable line(s)" % broken if broken else "")
    return dropped + broken


#: what each kind of metrics.jsonl row must hold as numbers (what the curves and reports plot)
ROW_NUMBERS = {"train": ("iteration", "loss"), "val": ("iteration", "mean_iou")}


def metrics_row_problem(row):
    """Why ``row`` of a metrics.jsonl is not one training writes (the words), or None: a JSON
    object of a known ``kind`` with its numbers (:data:`ROW_NUMBERS`)."""
    if not isinstance(row, dict):
        return "expected a JSON object (a metrics row), got %s" % type(row).__name__
    kind = row.get("kind")
    if kind not in ROW_NUMBERS:
        return "kind %r; a metrics row is one of %s" % (kind, ", ".join(sorted(ROW_NUMBERS)))
    for key in ROW_NUMBERS[kind]:
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "%s row: %s is %r, a number was expected" % (kind, key, value)
    return None


def plot_curves(metrics_path, out_path):
    """Loss and validation mIoU against iterations, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_path, metrics_row_problem)[0]  # a line cut by a kill: left out
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot([r["iteration"] for r in train], [r["loss"] for r in train])
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("training loss")
    ax[0].set_yscale("log")
    if val:
        ax[1].plot([r["iteration"] for r in val], [r["mean_iou"] for r in val], "o-")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("validation mIoU")
    ax[1].set_ylim(0, 1)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
