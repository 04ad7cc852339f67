#!/usr/bin/env python
"""Convert a Cityscapes split to an indexed RecordIO file (labelIds -> 19 trainIds).

Reads the official layout under ROOT:
  leftImg8bit/<split>/<city>/*_leftImg8bit.png
  gtFine/<split>/<city>/*_gtFine_labelIds.png      (gtCoarse/... with --coarse)
Every record holds the image, the trainId label (255 = ignored) and metadata: the image's name
and the release's 7 "bigger patch" crop anchors. The test split is written without labels.

example: python tools/cityscapes_to_rec.py --root data/cityscapes --split train --out data/cs_train
"""
import sys

import _common


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--root", required=True, help="Cityscapes root (holds leftImg8bit/, gtFine/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test", "train_extra"))
    p.add_argument("--coarse", action="store_true", help="use gtCoarse labels (train_extra needs it)")
    _common.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_cityscapes

    return _common.run_conversion(convert_cityscapes, args.root, args.split, args.out,
                                  coarse=args.coarse, **_common.conversion_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
