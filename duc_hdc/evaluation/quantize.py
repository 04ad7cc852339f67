"""``duc-hdc quantize``: INT8 post-training quantization with its accuracy cost measured."""
import logging
import os
import time

from ..data import SegRecordDataset
from ..inference.graphs import (DEFAULT_QUANTIZE_EXCLUDE, calibration_images, count_quantized_ops,
                                quantize_net, save_quantized)
from ..inference.segmenter import Segmenter
from .evaluate import evaluate

log = logging.getLogger(__name__)


def run_quantization(net, calib_rec, out, num_calib=4, eval_rec=None, calib_mode="naive",
                     exclude=DEFAULT_QUANTIZE_EXCLUDE, dataset_name="cityscapes", limit=None,
                     progress=True):
    """Everything ``duc-hdc quantize`` does: calibrate, quantize, save, and (with
    ``eval_rec``) measure the mIoU of fp32 and int8 with the shared inference path.

    Parameters
    ----------
    net : DUCHDC
        Trained network.
    calib_rec : str
        ``.rec`` file whose images calibrate the int8 ranges (labels unused).
    out : str
        Output prefix: ``out-symbol.json``, ``out-0000.params``, ``out.json``.
    num_calib : int
        Calibration images (spread evenly over the file).
    eval_rec : str, optional
        Labelled ``.rec`` file: evaluate fp32 (:class:`~duc_hdc.inference.segmenter.Segmenter` default
        path) and int8, whole-image protocol; the mIoUs go into the sidecar.
    calib_mode, exclude
        See :func:`quantize_net`.
    dataset_name : str
        Label table for the evaluation.
    limit : int, optional
        Evaluate the first ``limit`` images only.

    Returns
    -------
    dict
        ``files``, ``ops`` (operator counts), ``quantization`` settings and, with ``eval_rec``,
        ``fp32_miou``, ``int8_miou``, ``miou_change`` (int8 - fp32, in points) and
        ``images``.
    """
    images = calibration_images(calib_rec, num_calib, net.normalization)
    start = time.time()
    qnet = quantize_net(net, images, calib_mode=calib_mode, exclude=exclude)
    result = dict(quantize_s=time.time() - start, quantization=qnet.quantization)
    extra = {}
    if eval_rec:
        dataset = SegRecordDataset(eval_rec)
        scores = {}
        for kind, model in (("fp32", net), ("int8", qnet)):
            metric = evaluate(Segmenter(model), dataset, net.classes, dataset_name=dataset_name,
                              progress=progress, limit=limit)
            scores[kind] = float(metric.get()[1])
        extra = dict(fp32_miou=scores["fp32"], int8_miou=scores["int8"],
                     miou_change=100.0 * (scores["int8"] - scores["fp32"]),
                     images=len(dataset) if limit is None else min(limit, len(dataset)),
                     eval_rec=os.path.abspath(eval_rec))
        log.info("mIoU fp32 %.4f, int8 %.4f (%+.2f points)", scores["fp32"], scores["int8"],
                 extra["miou_change"])
    result["files"] = save_quantized(qnet, out, calib_rec=os.path.abspath(calib_rec), **extra)
    result["ops"] = count_quantized_ops(qnet)
    result.update(extra)
    return result
