#!/usr/bin/env python
"""Convert KITTI road to an indexed RecordIO file.

--root is data_road/. Split 'train' reads training/image_2/<cat>_<num>.png with
training/gt_image_2/<cat>_road_<num>.png: magenta road -> 1, red non-road -> 0, any other
colour -> 255 (the lane ground truth files are not used). Split 'test' reads
testing/image_2 (images only).

example: python tools/kitti_road_to_rec.py --root data/data_road --split train --out data/kitti_train
"""
import sys

import _common


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--root", required=True, help="the data_road folder")
    p.add_argument("--split", required=True, choices=("train", "test"))
    _common.add_output_args(p)
    args = p.parse_args(argv)
    from duc_hdc.data.datasets import convert_kitti_road

    return _common.run_conversion(convert_kitti_road, args.root, args.split, args.out,
                                  **_common.conversion_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
