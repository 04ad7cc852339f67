"""What a run reports: its log file, metrics.jsonl rows, the progress bar, the curves."""
import json
import logging
import os

from ..fileio import atomic_path


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


def plot_curves(metrics_path, out_path):
    """Loss and validation mIoU against iterations, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
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
