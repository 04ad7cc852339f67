"""``duc-hdc demo``: the end-to-end job on built-in synthetic data, on CPU.

Until training lands this is a smoke run of the inference path: build the Cityscapes model
(the original release's architecture), run a synthetic street scene through it, write the
colour map, and export the symbol.
"""
import logging
import os

import cv2
import mxnet as mx
import numpy as np

from . import get_model
from .export import export_model

log = logging.getLogger(__name__)


def _scene(h, w, seed=0):
    """A crude RGB street scene (sky, buildings, road) to push through the network."""
    rng = np.random.RandomState(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (70, 130, 180)
    img[h // 3: 2 * h // 3] = (120, 100, 90)
    img[2 * h // 3:] = (128, 64, 128)
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def run_demo(workdir):
    """Run the demo, writing everything under ``workdir``; returns the paths written."""
    from .data.labels import colorize

    os.makedirs(workdir, exist_ok=True)
    net = get_model("duc_hdc_resnet101_cityscapes")
    h, w = 256, 512
    img = _scene(h, w)
    norm = net.normalization
    x = (img.astype(np.float32) - np.asarray(norm["mean"], np.float32))
    if norm["std"] is not None:
        x /= np.asarray(norm["std"], np.float32)
    x = mx.nd.array(x.transpose(2, 0, 1)[None])
    net.hybridize(static_alloc=True, static_shape=True)
    logits = net(x)
    log.info("logits %s for a %dx%d image", logits.shape, h, w)
    up = mx.nd.contrib.BilinearResize2D(logits, height=h, width=w)
    pred = up.argmax(axis=1)[0].asnumpy().astype(np.uint8)
    paths = dict(image=os.path.join(workdir, "scene.png"),
                 colour=os.path.join(workdir, "scene_colour.png"))
    cv2.imwrite(paths["image"], img[:, :, ::-1])
    cv2.imwrite(paths["colour"], colorize(pred, "cityscapes")[:, :, ::-1])
    result = export_model(net, os.path.join(workdir, "duc_hdc_resnet101_cityscapes"),
                          (1, 3, h, w), check=False)
    paths["export"] = result["files"]
    for key, value in paths.items():
        log.info("%s: %s", key, value)
    return paths
