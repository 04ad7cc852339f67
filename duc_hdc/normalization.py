"""Input normalization, defined once, on the 0..255 RGB scale: ``x' = (x - mean) / std``.

No other scale exists in the project and nothing guesses one: ``mean=(0, 0, 0), std=(1, 1, 1)``
means exactly that (raw 0..255 input). GluonCV's 0..1 statistics appear here multiplied by 255.
Sidecars record ``normalization_scale: "0-255"`` (:mod:`duc_hdc.models.sidecar`). No duc_hdc or
mxnet imports: the data layer uses this without loading mxnet.
"""

#: The original release (TuSimple-DUC): its RGB mean, no std scaling.
RELEASE_MEAN = (122.675, 116.669, 104.008)
#: ImageNet statistics of GluonCV's backbones (0..1 values x 255).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

#: Per backbone variant: tusimple = the release's mean, no scaling; v1s = GluonCV's ImageNet.
NORMALIZATION = {
    "tusimple": dict(mean=RELEASE_MEAN, std=None),
    "v1s": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD),
}
