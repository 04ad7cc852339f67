"""``duc-hdc demo``: the main job end to end on built-in synthetic data, on a CPU, in minutes.

synthetic Cityscapes-layout scenes -> RecordIO -> train (the ``synthetic`` recipe) -> evaluate
on synthetic val (the official whole-image protocol) -> colour maps and overlays -> export the
symbol. Every step is the one a user runs on the real dataset; finished steps are skipped
when the demo runs again in the same work directory.
"""
import logging
import os
import time

import numpy as np

from ..fileio import atomic_json, atomic_png

log = logging.getLogger(__name__)

#: the demo's data: 256x512 scenes (Cityscapes aspect ratio)
NUM_TRAIN, NUM_VAL, SIZE, SEED = 240, 40, (256, 512), 0


def _prepare_data(workdir, num_train, num_val, size):
    from ..data.datasets import convert_cityscapes
    from .synthetic import make_synthetic_cityscapes

    root = os.path.join(workdir, "cityscapes")
    if not os.path.exists(os.path.join(root, ".complete")):
        make_synthetic_cityscapes(root, num_train=num_train, num_val=num_val, size=size,
                                  seed=SEED)
        open(os.path.join(root, ".complete"), "w").close()
    recs = {}
    for split in ("train", "val"):
        prefix = os.path.join(workdir, "rec", split)
        if not os.path.exists(prefix + ".rec"):  # written under a temporary name, then renamed
            os.makedirs(os.path.dirname(prefix), exist_ok=True)
            convert_cityscapes(root, split, prefix)
        recs[split] = prefix + ".rec"
    return root, recs


def _train(workdir, recs, ctx, overrides):
    from ..config import load_config
    from .. import train

    run_dir = os.path.join(workdir, "run")
    cfg = load_config("synthetic", ["data.train_rec=%s" % recs["train"],
                                    "data.val_rec=%s" % recs["val"],
                                    "train.out_dir=%s" % run_dir] + list(overrides or ()))
    final = os.path.join(run_dir, "final.params")
    if os.path.exists(final):
        log.info("%s exists: training already done", final)
        return final
    resume = run_dir if os.path.exists(os.path.join(run_dir, "checkpoints", "latest.json")) \
        else None
    # the demo's own run folder without a checkpoint (stopped before its first one) has nothing
    # to continue: it starts over, clean
    train(cfg, ctx=ctx, resume=resume, overwrite=resume is None)
    return final


def run_demo(workdir="demo_out", overrides=None, num_train=NUM_TRAIN, num_val=NUM_VAL,
             size=SIZE):
    """Run the demo under ``workdir``; returns a dict of results and paths.

    ``overrides`` are ``--set`` strings for the ``synthetic`` recipe (e.g. a shorter run).
    """
    import mxnet as mx

    from ..data import SegRecordDataset
    from ..data.labels import colorize, overlay
    from ..evaluation import report
    from ..evaluation.evaluate import class_names, evaluate
    from ..evaluation.metrics import WorstImages
    from ..inference.export import export_model
    from .. import load
    from ..inference.segmenter import Segmenter

    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    ctx = [mx.cpu()]
    size = tuple(size)
    data_root, recs = _prepare_data(workdir, num_train, num_val, size)
    final = _train(workdir, recs, ctx, overrides)

    net = load(final)
    segmenter = Segmenter(net)
    val = SegRecordDataset(recs["val"])
    eval_dir = os.path.join(workdir, "eval")
    eval_report_dir = os.path.join(eval_dir, "report")
    report.prepare_report_dir(eval_report_dir)
    worst = WorstImages(8)
    metric = evaluate(segmenter, val, net.classes, dataset_name="cityscapes", save_dir=eval_dir,
                      worst=worst)
    pixel_accuracy, mean_iou = metric.get()
    facts = report.evaluation_facts("final.params of the demo run (synthetic recipe)",
                                    net.config, final, "cityscapes", recs["val"], None,
                                    segmenter.settings, len(val))
    eval_report = report.write_evaluation_report(
        eval_report_dir, metric, facts, class_names("cityscapes", net.classes), "cityscapes",
        worst)
    run_report = report.write_run_report(os.path.dirname(final), eval_report=eval_report)

    pred_dir = os.path.join(workdir, "predictions")
    os.makedirs(pred_dir, exist_ok=True)
    for i in range(min(4, len(val))):
        img, label = val[i]
        pred = segmenter.predict(img)
        name = "val_%02d" % i
        panel = np.concatenate([img, colorize(label, "cityscapes"), colorize(pred, "cityscapes"),
                                overlay(img, pred, "cityscapes")], axis=0)
        atomic_png(os.path.join(pred_dir, name + "_panel.png"), panel[:, :, ::-1])
    export = export_model(net, os.path.join(workdir, "export", "duc_hdc_synthetic"),
                          (1, 3) + size, weights=final)
    result = dict(mean_iou=float(mean_iou), pixel_accuracy=float(pixel_accuracy),
                  data=data_root, rec=recs, run=os.path.dirname(final), params=final,
                  curves=os.path.join(os.path.dirname(final), "curves.png"),
                  eval=eval_dir, predictions=pred_dir, export=export["files"],
                  eval_report=eval_report, run_report=run_report,
                  seconds=time.time() - start)
    atomic_json(os.path.join(workdir, "demo.json"), result)
    return result
