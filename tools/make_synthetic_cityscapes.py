#!/usr/bin/env python
"""Generate synthetic street scenes in the real Cityscapes layout.

A thin wrapper over the installed package: the same as `duc-hdc data synthetic ...`
(`duc-hdc data synthetic --help` lists the options).

example: python tools/make_synthetic_cityscapes.py --out data/synthetic --train 200 --val 50
"""
import sys

from duc_hdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "synthetic"] + sys.argv[1:]))
