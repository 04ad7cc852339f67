#!/usr/bin/env python
"""Generate synthetic street scenes in the real Cityscapes layout.

Writes OUT/leftImg8bit/<split>/<city>/*_leftImg8bit.png and
OUT/gtFine/<split>/<city>/*_gtFine_labelIds.png (official labelIds), so every tool runs on it
exactly as on Cityscapes, e.g. then:
  python tools/cityscapes_to_rec.py --root OUT --split train --out OUT/train

Scenes are a deterministic function of (--seed, split, index).

example: python tools/make_synthetic_cityscapes.py --out data/synthetic --train 200 --val 50
"""
import argparse
import os
import sys
import time

# runnable as `python tools/make_synthetic_cityscapes.py` from a checkout, installed or not
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _size(text):
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--size must be H,W (e.g. 256,512), got %r" % text)
    return h, w


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="ROOT", help="dataset root to create")
    p.add_argument("--train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--test", type=int, default=0, help="test images, without labels (default 0)")
    p.add_argument("--size", type=_size, default=(256, 512), metavar="H,W",
                   help="image size (default 256,512; 1024,2048 is Cityscapes' own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="rendering processes (default: one per core); the files do not depend on it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from duc_hdc.demo.synthetic import make_synthetic_cityscapes

    start = time.time()
    try:
        counts = make_synthetic_cityscapes(args.out, args.train, args.val, size=args.size,
                                           seed=args.seed, num_test=args.test,
                                           progress=not args.quiet, workers=args.workers)
    except (ValueError, IOError) as err:
        print("error: %s" % err, file=sys.stderr)
        return 1
    print("wrote %d train, %d val, %d test images of %dx%d to %s in %.1f s"
          % (counts["train"], counts["val"], counts["test"], args.size[0], args.size[1],
             args.out, time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
