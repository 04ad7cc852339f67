#!/usr/bin/env python
"""Convert a Cityscapes split to an indexed RecordIO file (labelIds -> 19 trainIds).

A thin wrapper over the installed package: the same as `duc-hdc data cityscapes ...`
(`duc-hdc data cityscapes --help` lists the options).

example: python tools/cityscapes_to_rec.py --root data/cityscapes --split train --out data/cs_train
"""
import sys

from duc_hdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "cityscapes"] + sys.argv[1:]))
