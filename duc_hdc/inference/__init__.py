"""Inference: the Segmenter's protocols, graph passes (BatchNorm folding, INT8), export, benchmark."""
