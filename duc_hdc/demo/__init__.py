"""The demo: synthetic Cityscapes-layout street scenes and the end-to-end pipeline."""
