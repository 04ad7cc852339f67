"""Networks: ResNet-HDC backbones, the DUC head, and ``get_model``."""
from .network import DUCHDC, MODEL_SPECS, build_model, get_model, model_names

__all__ = ["DUCHDC", "MODEL_SPECS", "build_model", "get_model", "model_names"]
