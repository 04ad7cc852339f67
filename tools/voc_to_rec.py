#!/usr/bin/env python
"""Convert PASCAL VOC 2012 (optionally with the SBD augmented set) to an indexed RecordIO file.

--voc-root is VOCdevkit/VOC2012 (JPEGImages/, SegmentationClass/ palette PNGs with 255 =
boundary, ImageSets/Segmentation/{train,val,trainval}.txt). --sbd-root is SBD's
benchmark_RELEASE/dataset (img/, cls/*.mat, train.txt, val.txt).

Splits: train, val, trainval (VOC lists) and train_aug = VOC train + SBD train + SBD val
without any VOC val image (10,582 images with the full data sets); VOC's annotation is used
where it exists, SBD's elsewhere.

example: python tools/voc_to_rec.py --voc-root VOCdevkit/VOC2012 \
             --sbd-root benchmark_RELEASE/dataset --split train_aug --out data/voc_train_aug
"""
import argparse
import os
import sys

# runnable as `python tools/voc_to_rec.py` from a checkout, installed or not
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from duc_hdc.data import recordio  # noqa: E402  (numpy + OpenCV; MXNet loads on use)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012")
    p.add_argument("--sbd-root", help="SBD benchmark_RELEASE/dataset (needed for train_aug)")
    p.add_argument("--split", required=True, choices=("train_aug", "train", "val", "trainval"))
    recordio.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_voc

    code, out, err = recordio.run_conversion(convert_voc, args.voc_root, args.split, args.out,
                                             sbd_root=args.sbd_root, **recordio.output_kwargs(args))
    if out:
        print(out)
    if err:
        print(err, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
