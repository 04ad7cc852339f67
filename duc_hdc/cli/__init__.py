"""The ``duc-hdc`` command line: argument parsing only; the work lives in the library layers."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
