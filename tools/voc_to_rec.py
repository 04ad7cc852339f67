#!/usr/bin/env python
"""Convert PASCAL VOC 2012 (optionally with the SBD augmented set) to an indexed RecordIO file.

A thin wrapper over the installed package: the same as `duc-hdc data voc ...`
(`duc-hdc data voc --help` lists the options).

example: python tools/voc_to_rec.py --voc-root VOCdevkit/VOC2012 --sbd-root benchmark_RELEASE/dataset --split train_aug --out data/voc_train_aug
"""
import sys

from duc_hdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "voc"] + sys.argv[1:]))
