#!/usr/bin/env python
"""Convert PASCAL VOC 2012 (optionally with the SBD augmented set) to an indexed RecordIO file.

--voc-root is VOCdevkit/VOC2012 (JPEGImages/, SegmentationClass/ palette PNGs with 255 =
boundary, ImageSets/Segmentation/{train,val,trainval}.txt). --sbd-root is SBD's
benchmark_RELEASE/dataset (img/, cls/*.mat, train.txt, val.txt).

Splits: train, val, trainval (VOC lists) and train_aug = VOC train + SBD train + SBD val
without any VOC val image (10,582 images with the full data sets); VOC's annotation is used
where it exists, SBD's elsewhere.

example: python tools/voc_to_rec.py --voc-root VOCdevkit/VOC2012 --sbd-root benchmark_RELEASE/dataset \
             --split train_aug --out data/voc_train_aug
"""
import sys

import _common


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012")
    p.add_argument("--sbd-root", help="SBD benchmark_RELEASE/dataset (needed for train_aug)")
    p.add_argument("--split", required=True, choices=("train_aug", "train", "val", "trainval"))
    _common.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_voc

    return _common.run_conversion(convert_voc, args.voc_root, args.split, args.out,
                                  sbd_root=args.sbd_root, **_common.conversion_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
