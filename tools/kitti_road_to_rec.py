#!/usr/bin/env python
"""Convert KITTI road to an indexed RecordIO file.

--root is data_road/. Split 'train' reads training/image_2/<cat>_<num>.png with
training/gt_image_2/<cat>_road_<num>.png: magenta road -> 1, red non-road -> 0, any other
colour -> 255 (the lane ground truth files are not used). Split 'test' reads
testing/image_2 (images only).

example: python tools/kitti_road_to_rec.py --root data/data_road --split train \
             --out data/kitti_train
"""
import argparse
import os
import sys

# runnable as `python tools/kitti_road_to_rec.py` from a checkout, installed or not
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from duc_hdc.data import recordio  # noqa: E402  (numpy + OpenCV; MXNet loads on use)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the data_road folder")
    p.add_argument("--split", required=True, choices=("train", "test"))
    recordio.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_kitti_road

    code, out, err = recordio.run_conversion(convert_kitti_road, args.root, args.split, args.out,
                                             **recordio.output_kwargs(args))
    if out:
        print(out)
    if err:
        print(err, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
