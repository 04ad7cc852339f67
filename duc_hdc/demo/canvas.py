"""The synthetic scenes' drawing surface: label ids, palettes, the canvas and shared helpers."""
import cv2
import numpy as np

from ..data.labels import CITYSCAPES_NAME_TO_ID as _ID

ROAD, SIDEWALK, BUILDING, WALL = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"]
POLE, SIGN = _ID["pole"], _ID["traffic sign"]
VEGETATION, TERRAIN = _ID["vegetation"], _ID["terrain"]
SKY, PERSON, CAR = _ID["sky"], _ID["person"], _ID["car"]
UNLABELED, EGO, BORDER, STATIC = (_ID["unlabeled"], _ID["ego vehicle"],
                                  _ID["rectification border"], _ID["static"])

#: labelIds the generator draws.
USED_LABEL_IDS = sorted([ROAD, SIDEWALK, BUILDING, WALL, POLE, SIGN, VEGETATION, TERRAIN, SKY,
                         PERSON, CAR, UNLABELED, EGO, BORDER, STATIC])


_FACADE_COLORS = np.array([
    [185, 168, 140], [150, 148, 142], [170, 120, 95], [205, 200, 190], [120, 118, 118],
    [160, 140, 120], [140, 95, 80], [190, 185, 170]], np.float32)
_WALL_COLORS = np.array([
    [150, 148, 142], [170, 120, 95], [140, 95, 80], [120, 125, 135], [165, 160, 150],
    [130, 110, 100]], np.float32)
_CAR_COLORS = np.array([
    [220, 220, 220], [30, 30, 32], [150, 152, 155], [170, 25, 25], [30, 60, 150],
    [100, 100, 105], [200, 190, 160], [40, 90, 60]], np.float32)


class _Canvas(object):
    """Image (float32 RGB) and labelIds being painted back to front."""

    def __init__(self, rng, h, w):
        self.rng, self.h, self.w = rng, h, w
        self.img = np.zeros((h, w, 3), np.float32)
        self.ids = np.full((h, w), SKY, np.uint8)
        self.ys = np.arange(h, dtype=np.float32)[:, None]
        self.xs = np.arange(w, dtype=np.float32)[None, :]

    def paint(self, mask, texture, label, box=None):
        """Paint ``texture`` (HxWx3 or RGB triple) and ``label`` where ``mask``; box = (y0, x0)."""
        if box is None:
            img, ids = self.img, self.ids
        else:
            y0, x0 = box
            hh, ww = mask.shape
            img = self.img[y0: y0 + hh, x0: x0 + ww]
            ids = self.ids[y0: y0 + hh, x0: x0 + ww]
        mask = np.broadcast_to(mask, ids.shape)
        np.copyto(img, np.broadcast_to(texture, img.shape), where=mask[..., None])
        ids[mask] = label

    # -- noise
    def smooth(self, cell, h=None, w=None):
        """Low-frequency noise of unit std, features of about ``cell`` pixels."""
        h, w = h or self.h, w or self.w
        cell = max(cell, 1.0)
        gh, gw = int(h / cell) + 2, int(w / cell) + 2
        grid = self.rng.standard_normal((gh, gw), dtype=np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)

    def fine(self, h=None, w=None):
        return self.rng.standard_normal((h or self.h, w or self.w), dtype=np.float32)


def _tint(rgb, amount, rng):
    return np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32)


def _shade(base, mod):
    """Colour ``base`` (3,) modulated additively by ``mod`` (H, W) -> (H, W, 3)."""
    return base[None, None, :] + mod[..., None]



def _vegetation_texture(c, px, h=None, w=None):
    """Leaves: strong medium-frequency light/dark clusters over a green-brown base."""
    rng = c.rng
    base = np.array([rng.uniform(45, 100), rng.uniform(80, 130), rng.uniform(25, 65)],
                    np.float32)
    leaves = c.smooth(2.5 * px, h, w) * 28 + c.smooth(7 * px, h, w) * 18
    return base + leaves[..., None] * np.array([0.8, 1.0, 0.6], np.float32) + \
        c.fine(h, w)[..., None] * 6



def _box(c, x0, y0, x1, y1):
    """Clip a box to the canvas; returns ints or None if empty."""
    x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    x1, y1 = min(int(np.ceil(x1)), c.w), min(int(np.ceil(y1)), c.h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _local_mask(shape, draw):
    mask = np.zeros(shape, np.uint8)
    draw(mask)
    return mask.astype(bool)
