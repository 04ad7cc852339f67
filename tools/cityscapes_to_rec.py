#!/usr/bin/env python
"""Convert a Cityscapes split to an indexed RecordIO file (labelIds -> 19 trainIds).

Reads the official layout under ROOT:
  leftImg8bit/<split>/<city>/*_leftImg8bit.png
  gtFine/<split>/<city>/*_gtFine_labelIds.png      (gtCoarse/... with --coarse)
Every record holds the image, the trainId label (255 = ignored) and metadata: the image's name
and the release's 7 "bigger patch" crop anchors. The test split is written without labels.

example: python tools/cityscapes_to_rec.py --root data/cityscapes --split train --out data/cs_train
"""
import argparse
import os
import sys

# runnable as `python tools/cityscapes_to_rec.py` from a checkout, installed or not
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from duc_hdc.data import recordio  # noqa: E402  (numpy + OpenCV; MXNet loads on use)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="Cityscapes root (holds leftImg8bit/, gtFine/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test", "train_extra"))
    p.add_argument("--coarse", action="store_true",
                   help="use gtCoarse labels (train_extra needs it)")
    recordio.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_cityscapes

    code, out, err = recordio.run_conversion(convert_cityscapes, args.root, args.split, args.out,
                                             coarse=args.coarse, **recordio.output_kwargs(args))
    if out:
        print(out)
    if err:
        print(err, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
