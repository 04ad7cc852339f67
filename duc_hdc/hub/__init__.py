"""Hub: zoo entries, verified downloads, and the release / ONNX-zoo weight converters."""
