#!/usr/bin/env python
"""Input pipeline throughput: augmented training crops per second.

Generates synthetic 1024x2048 Cityscapes-layout images, converts them to RecordIO (lossless:
the PNG bytes as they are; and re-encoded JPEG), then times the release's augmentation
(800x800 crops, scales 0.5..1.5, anchor jitter, mirror, cell width 2) through gluon DataLoader
workers, against the same images read from the folders as PNG. Prints crops/s and the ratio to
the folder pipeline measured in the same run.

Not a test. Default run: well under 3 minutes on 2 cores.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crops_per_second(source, batch_size, num_workers, batches, transform):
    from duc_hdc.data.loader import build_train_loader

    loader = build_train_loader(source, batch_size, transform, num_workers=num_workers, seed=0,
                                epoch=0, last_batch="discard")
    batches = min(batches, len(loader) - 1)
    if batches < 1:
        raise SystemExit("too few images for one timed batch: raise --images")
    it = iter(loader)
    next(it)  # worker start-up and first decode are not throughput
    start = time.time()
    n = 0
    for _ in range(batches):
        data, label = next(it)
        data.wait_to_read()
        n += data.shape[0]
    elapsed = time.time() - start
    del it, loader
    return n / elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=24, help="synthetic images (default 24)")
    p.add_argument("--size", default="1024,2048", help="H,W of the images (default 1024,2048)")
    p.add_argument("--crop", type=int, default=800, help="square crop size (default 800)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--batches", type=int, default=10, help="timed batches per pipeline")
    p.add_argument("--workers", default="1,2", help="worker counts to time (default 1,2)")
    p.add_argument("--workdir", help="keep the generated data here (default: a temp dir)")
    args = p.parse_args(argv)

    from duc_hdc.data.datasets import CityscapesFolder, convert_cityscapes
    from duc_hdc.demo.synthetic import make_synthetic_cityscapes
    from duc_hdc.data.transforms import RELEASE_SCALES, TrainTransform

    h, w = (int(v) for v in args.size.split(","))
    work = args.workdir or tempfile.mkdtemp(prefix="duc_hdc_bench_")
    try:
        t0 = time.time()
        make_synthetic_cityscapes(work, args.images, 0, size=(h, w), seed=0, progress=False)
        t1 = time.time()
        raw = convert_cityscapes(work, "train", os.path.join(work, "train_raw"), progress=False)
        t2 = time.time()
        jpg = convert_cityscapes(work, "train", os.path.join(work, "train_jpg"), encoding="jpg",
                                 quality=95, progress=False)
        t3 = time.time()
        print("%d synthetic %dx%d images: generated in %.1f s; converted in %.1f s (lossless, "
              "%.0f MiB) and %.1f s (JPEG q95, %.0f MiB)"
              % (args.images, h, w, t1 - t0, t2 - t1, raw.rec_bytes / 2.0 ** 20, t3 - t2,
                 jpg.rec_bytes / 2.0 ** 20))
        transform = TrainTransform(crop_size=(args.crop, args.crop), scales=RELEASE_SCALES,
                                   cell_width=2, anchor_jitter=120, mirror=True)
        sources = [("folders (PNG)", CityscapesFolder(work, "train")),
                   (".rec lossless (PNG)", raw.prefix + ".rec"),
                   (".rec JPEG q95", jpg.prefix + ".rec")]
        workers = [int(v) for v in args.workers.split(",")]
        results = {}
        print("\n%-22s %8s %12s %14s %10s" % ("pipeline", "workers", "crops/s", "ms/crop/worker",
                                              "vs folders"))
        for nw in workers:
            for name, source in sources:
                rate = crops_per_second(source, args.batch_size, nw, args.batches, transform)
                results[(name, nw)] = rate
                base = results[(sources[0][0], nw)]
                print("%-22s %8d %12.1f %14.1f %9.2fx" % (name, nw, rate, 1000.0 * nw / rate,
                                                        rate / base))
        print("\nratio .rec lossless / folders: %s"
              % ", ".join("%d worker(s) %.2fx" % (nw, results[(sources[1][0], nw)]
                                                  / results[(sources[0][0], nw)])
                          for nw in workers))
        print("ratio .rec JPEG / folders:     %s"
              % ", ".join("%d worker(s) %.2fx" % (nw, results[(sources[2][0], nw)]
                                                  / results[(sources[0][0], nw)])
                          for nw in workers))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
