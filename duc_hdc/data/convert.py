"""Dataset folders -> indexed RecordIO (labels mapped to trainIds once, here)."""
import logging
import os
import time

from ..stops import quiet_worker, raised_stops
from .recordio import (BadSampleError, ConversionReport, EmptySplitError, RecordWriter,
                       encode_image_jpeg, encode_label)
from .sources import _sample_meta, cityscapes_samples, kitti_road_samples, load_sample, voc_samples

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- converting

def _convert_one(args):
    sample, encoding, quality = args
    data, img, label = load_sample(sample, keep_bytes=(encoding == "raw"))
    if encoding == "jpg":
        data = encode_image_jpeg(img, quality)
    meta = _sample_meta(sample, img)
    return data, (None if label is None else encode_label(label)), meta


def convert_samples(samples, out_prefix, encoding="raw", quality=95, skip_bad=False,
                    num_workers=1, progress=True, extra_meta=None):
    """Write samples to ``out_prefix.rec/.idx/.lst``.

    Parameters
    ----------
    samples : list of Sample
        What to convert, in order.
    out_prefix : str
        Output path without extension.
    encoding : {'raw', 'jpg'}
        'raw' stores the source image bytes as they are (lossless); 'jpg' re-encodes.
    quality : int
        JPEG quality for ``encoding='jpg'``.
    skip_bad : bool
        Skip (and report) bad samples instead of stopping at the first one.
    num_workers : int
        Decode / check in this many processes (records are written in order).
    progress : bool
        Show a tqdm progress bar.
    extra_meta : dict or None
        Added to every record's metadata (e.g. dataset, split).

    Returns
    -------
    ConversionReport
        ``skipped`` is a list of (path, reason).

    Raises
    ------
    BadSampleError
        On the first bad sample unless ``skip_bad``; nothing is written then.
    """
    from tqdm import tqdm

    if encoding not in ("raw", "jpg"):
        raise ValueError("encoding must be 'raw' or 'jpg', got %r" % (encoding,))
    if not 1 <= int(quality) <= 100:
        raise ValueError("JPEG quality must be in 1..100, got %r" % (quality,))
    samples = list(samples)
    if not samples:
        raise EmptySplitError(out_prefix, "empty split: nothing to convert")
    start = time.time()
    skipped = []
    pool = None
    jobs = [(s, encoding, quality) for s in samples]
    if num_workers > 1:
        import multiprocessing

        pool = multiprocessing.Pool(num_workers, initializer=quiet_worker)
        results = pool.imap(_safe_convert_one, jobs, chunksize=4)
    else:
        results = map(_safe_convert_one, jobs)
    bar = tqdm(results, total=len(jobs), desc=os.path.basename(out_prefix), unit="img",
               disable=not progress)
    try:
        with raised_stops(), RecordWriter(out_prefix) as writer:  # SIGTERM too removes .part
            for result in bar:
                if isinstance(result, BadSampleError):
                    if not skip_bad:
                        raise result
                    logger.warning("skipping %s", result)
                    skipped.append((result.path, result.reason))
                    continue
                image_bytes, label_bytes, meta = result
                if extra_meta:
                    meta.update(extra_meta)
                writer.write(image_bytes, label_bytes, meta)
            if writer.count == 0:
                raise BadSampleError(out_prefix, "every sample was bad (%d skipped)"
                                     % len(skipped))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    size = os.path.getsize(out_prefix + ".rec")
    return ConversionReport(out_prefix, writer.count, skipped, size, time.time() - start)


def _safe_convert_one(args):
    try:
        return _convert_one(args)
    except BadSampleError as err:
        return err


def convert_cityscapes(root, split, out_prefix, coarse=False, **kwargs):
    """Convert a Cityscapes split (labelIds -> trainIds); see :func:`convert_samples`."""
    samples = cityscapes_samples(root, split, coarse)
    extra = {"dataset": "cityscapes", "split": split}
    return convert_samples(samples, out_prefix, extra_meta=extra, **kwargs)


def convert_voc(voc_root, split, out_prefix, sbd_root=None, **kwargs):
    """Convert a PASCAL VOC 2012 split (or ``train_aug`` with SBD); see :func:`convert_samples`."""
    samples = voc_samples(voc_root, split, sbd_root)
    return convert_samples(samples, out_prefix, extra_meta={"dataset": "voc", "split": split},
                           **kwargs)


def convert_kitti_road(root, split, out_prefix, **kwargs):
    """Convert KITTI road (colour ground truth -> trainIds); see :func:`convert_samples`."""
    samples = kitti_road_samples(root, split)
    return convert_samples(samples, out_prefix,
                           extra_meta={"dataset": "kitti_road", "split": split}, **kwargs)
