#!/usr/bin/env python
"""Accuracy cost of bf16 and int8 against fp32 on a trained model: mIoU and argmax agreement.

Each precision is built by :func:`duc_hdc.inference.graphs.inference_runner` (what
``--precision`` runs) and evaluated with the shared :class:`~duc_hdc.inference.segmenter.Segmenter`
(whole-image protocol) on the same labelled ``.rec``; the pixel argmax agreement of bf16 and
int8 with fp32 is counted on the same images. int8 is calibrated on ``--num-calib`` images of
``--calib-rec`` (default: the val file). Prints the CPU, the AMX state and a table.

    python bench/accuracy.py --params demo_out/model.params --val-rec demo_out/val.rec
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import duc_hdc  # noqa: E402  (process set-up: threads, AMX, before mxnet)
import numpy as np  # noqa: E402

from duc_hdc import runtime  # noqa: E402


def measure(params, val_rec, calib_rec=None, num_calib=8, precisions=("fp32", "bf16", "int8"),
            limit=None, dataset_name="cityscapes", progress=True):
    """dict precision -> dict(miou, pixel_acc, agreement, seconds) (agreement with fp32)."""
    from tqdm import tqdm

    from duc_hdc.data import SegRecordDataset
    from duc_hdc.evaluation.metrics import SegmentationMetric
    from duc_hdc.inference.graphs import calibration_images, inference_runner
    from duc_hdc.inference.segmenter import Segmenter

    net = duc_hdc.load(params)
    dataset = SegRecordDataset(val_rec)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    segmenters, results = {}, {}
    for precision in precisions:
        calib = None
        if precision == "int8":
            calib = calibration_images(calib_rec or val_rec, num_calib, net.normalization)
        try:
            segmenters[precision] = Segmenter(inference_runner(net, precision,
                                                               calib_images=calib))
        except ValueError as err:  # e.g. bf16 on a CPU without it
            results[precision] = dict(error=str(err))
    metrics = {p: SegmentationMetric(net.classes) for p in segmenters}
    agree = {p: 0 for p in segmenters}
    seconds = {p: 0.0 for p in segmenters}
    pixels = 0
    for i in tqdm(range(count), desc="images", disable=not progress):
        img, label = dataset[i]
        preds = {}
        for p, seg in segmenters.items():
            start = time.perf_counter()
            preds[p] = seg.predict(img)
            seconds[p] += time.perf_counter() - start
            metrics[p].update(np.asarray(label), preds[p])
        base = preds.get("fp32")
        pixels += base.size if base is not None else 0
        for p in preds:
            if base is not None:
                agree[p] += int((preds[p] == base).sum())
    for p in segmenters:
        acc, miou = metrics[p].get()
        results[p] = dict(miou=miou, pixel_acc=acc, seconds=seconds[p] / max(count, 1),
                          agreement=agree[p] / pixels if pixels else None)
    results["_images"] = count
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", required=True, help="FILE.params with its FILE.json sidecar")
    p.add_argument("--val-rec", required=True, help="labelled .rec to evaluate on")
    p.add_argument("--calib-rec", help="int8 calibration images (default: --val-rec)")
    p.add_argument("--num-calib", type=int, default=8)
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--split-channels", type=int,
                   help="split convolutions wider than this by input channels (the fp32 and "
                        "bf16 graphs; default duc_hdc.inference.splitting.SPLIT_CHANNELS = "
                        "512, which the demo's narrow head (128) does not reach: give e.g. 32 "
                        "to measure the split's accuracy cost on it)")
    args = p.parse_args(argv)
    if args.split_channels:
        from duc_hdc.inference import splitting

        splitting.SPLIT_CHANNELS = args.split_channels
        print("input split: convolutions wider than %d channels (where it helps: %s)"
              % (args.split_channels, splitting.splitting_helps()))
    print("cpu: %s; %s" % (runtime.cpu_model(), runtime.amx_state()["reason"]))
    print("oneDNN ISA: %s" % runtime.onednn_isa())
    res = measure(args.params, args.val_rec, args.calib_rec, args.num_calib,
                  [s.strip() for s in args.precisions.split(",") if s.strip()], args.limit)
    base = res.get("fp32", {}).get("miou")
    print("\n%d images of %s\n" % (res.pop("_images"), args.val_rec))
    print("| precision | mIoU | vs fp32 (points) | pixel acc | argmax agreement with fp32 | "
          "s/image |")
    print("|---|---|---|---|---|---|")
    for name, r in res.items():
        if "error" in r:
            print("| %s | refused: %s | | | | |" % (name, r["error"]))
            continue
        delta = "%+.2f" % (100 * (r["miou"] - base)) if base is not None else ""
        agreement = "%.4f" % r["agreement"] if r["agreement"] is not None else ""
        print("| %s | %.4f | %s | %.4f | %s | %.2f |" % (name, r["miou"], delta, r["pixel_acc"],
                                                        agreement, r["seconds"]))
    return res


if __name__ == "__main__":
    main()
