#!/usr/bin/env python
"""Convert KITTI road to an indexed RecordIO file.

A thin wrapper over the installed package: the same as `duc-hdc data kitti_road ...`
(`duc-hdc data kitti_road --help` lists the options).

example: python tools/kitti_road_to_rec.py --root data/data_road --split train --out data/kitti_train
"""
import sys

from duc_hdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "kitti_road"] + sys.argv[1:]))
