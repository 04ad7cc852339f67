"""Procedural street scenes written in the real Cityscapes folder layout.

Every tool of the package runs on this data exactly as on Cityscapes: the generator writes
``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (RGB) and
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` with the official
labelIds (the converter maps them to trainIds like the real dataset's).

The scenes are built to need texture, geometry and context rather than colour alone: a
one-point-perspective street (ground plane with road, sidewalk and terrain bands; facades of
buildings, walls and trees along both sides; sky) with cars, persons, poles, traffic signs and
clutter placed on the ground plane at consistent scales. Classes share colour ranges on purpose
(road / sidewalk / wall / building / pole are all greys, terrain and vegetation are both
green-brown, cars and clothes take any colour, an overcast sky is grey) and differ by texture
(asphalt grain and lane markings, paving-tile joints, window grids, brick courses, leaves,
smooth grass patches) and by where they are. Every image has its own illumination gain, colour
cast, gamma, cast shadow and sensor noise.

Eleven evaluated classes appear (road, sidewalk, building, wall, pole, traffic sign,
vegetation, terrain, sky, person, car) plus the ignored ids unlabeled (0), ego vehicle (1),
rectification border (2) and static (4), so the labelId -> trainId mapping, 255 included, is
exercised.

Each image's random generator is seeded from ``(seed, split, index)``: a scene is the same
whatever the number of images generated around it.
"""
import logging
import os

import cv2
import numpy as np

from ..data.labels import CITYSCAPES_NAME_TO_ID as _ID

logger = logging.getLogger(__name__)

__all__ = ["render_scene", "make_synthetic_cityscapes", "SPLIT_CITIES", "USED_LABEL_IDS"]

ROAD, SIDEWALK, BUILDING, WALL = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"]
POLE, SIGN = _ID["pole"], _ID["traffic sign"]
VEGETATION, TERRAIN = _ID["vegetation"], _ID["terrain"]
SKY, PERSON, CAR = _ID["sky"], _ID["person"], _ID["car"]
UNLABELED, EGO, BORDER, STATIC = (_ID["unlabeled"], _ID["ego vehicle"],
                                  _ID["rectification border"], _ID["static"])

#: labelIds the generator draws.
USED_LABEL_IDS = sorted([ROAD, SIDEWALK, BUILDING, WALL, POLE, SIGN, VEGETATION, TERRAIN, SKY,
                         PERSON, CAR, UNLABELED, EGO, BORDER, STATIC])

#: City folder of each split (names without underscores, as Cityscapes file names need).
SPLIT_CITIES = {"train": ["synthtown", "synthville"], "val": ["synthberg"], "test": ["synthdorf"]}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

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


def render_scene(rng, height=256, width=512):
    """Render one synthetic street scene.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (the scene is a pure function of its state).
    height, width : int
        Image size; geometry scales with it.

    Returns
    -------
    rgb : numpy.ndarray
        (height, width, 3) uint8 RGB image.
    label_ids : numpy.ndarray
        (height, width) uint8 Cityscapes labelIds.
    """
    c = _Canvas(rng, height, width)
    h, w = height, width
    px = h / 256.0  # texture scale: features keep their size relative to the image
    y_h = h * rng.uniform(0.36, 0.47)  # horizon row
    x_v = w * rng.uniform(0.40, 0.60)  # vanishing point column
    focal = float(w)  # pixels; ground depth Z = focal / (y - y_h) in camera-height units

    # ---------------------------------------------------------------------------- sky
    t = np.clip(c.ys / max(y_h, 1.0), 0, 1)[..., None]
    if rng.random() < 0.15:  # overcast: grey, like the facades and the road
        top = _tint(rng.uniform(150, 200) * np.ones(3), 0.04, rng)
        bottom = top + rng.uniform(5, 25)
    else:
        top = np.array([rng.uniform(45, 95), rng.uniform(100, 145), rng.uniform(170, 225)],
                       np.float32)
        bottom = top + np.array([rng.uniform(50, 100), rng.uniform(40, 70), rng.uniform(10, 30)],
                                np.float32)
    sky = top * (1 - t) + bottom * t
    clouds = np.clip(c.smooth(40 * px) * 1.0 - rng.uniform(0.3, 1.2), 0, None)
    sky = sky + (clouds * rng.uniform(20, 50))[..., None] + c.fine()[..., None] * 1.5
    c.img[:] = sky

    # ------------------------------------------------------------------------- ground
    below = c.ys > y_h + 0.5
    s_g = np.maximum(c.ys - y_h, 0.5)  # pixels per unit at the row
    ground_x = (c.xs - x_v) / s_g  # lateral position (camera heights; + = right)
    ground_z = focal / s_g  # depth
    road_l, road_r = -rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0)
    sides = {}
    for name, sign, edge in (("left", -1.0, road_l), ("right", 1.0, road_r)):
        walk = rng.uniform(0.6, 1.8)
        grass = rng.uniform(0.8, 2.5) if rng.random() < 0.7 else 0.0
        sides[name] = dict(sign=sign, road=abs(edge), walk=abs(edge) + walk,
                           grass=abs(edge) + walk + grass)
    facade_x = {k: v["grass"] for k, v in sides.items()}
    lat = np.abs(ground_x)
    side_r = ground_x > 0
    walk_edge = np.where(side_r, sides["right"]["walk"], sides["left"]["walk"])
    road_edge = np.where(side_r, sides["right"]["road"], sides["left"]["road"])
    # terrain everywhere past the sidewalk (also behind the facades, seen through gaps)
    c.paint(below, _terrain_texture(c, ground_z, px), TERRAIN)
    c.paint(below & (lat < walk_edge), _sidewalk_texture(c, ground_x, ground_z, px), SIDEWALK)
    kerb = _tint(np.full(3, rng.uniform(170, 215)), 0.03, rng)  # kerb stones: sidewalk
    c.paint(below & (lat < road_edge + 0.12), _shade(kerb, c.fine() * 5), SIDEWALK)
    c.paint(below & (lat < road_edge),
            _road_texture(c, ground_x, ground_z, px, road_l, road_r), ROAD)

    # ------------------------------------------------------------------------ facades
    # the end of the street: a block across at depth z_end hides the vanishing point's clutter
    s_end = rng.uniform(0.08, 0.16) * (h - y_h) + 1.0
    for name, side in sides.items():
        _facades(c, side["sign"], facade_x[name], x_v, y_h, focal, px, z_end=focal / s_end)
    _end_block(c, x_v, y_h, facade_x, s_end, px)

    # ------------------------------------------------------------------------ objects
    s_max = h - y_h
    objects = []
    for _ in range(rng.integers(1, 6)):  # cars on the road
        s = rng.uniform(0.22, 0.75) * s_max
        objects.append((s, "car", rng.uniform(road_l + 0.75, road_r - 0.75)))
    for _ in range(rng.integers(1, 6)):  # persons on the sidewalks
        name = "left" if rng.random() < 0.5 else "right"
        side = sides[name]
        objects.append((rng.uniform(0.5, 0.95) * s_max, "person",
                        side["sign"] * rng.uniform(side["road"] + 0.2, side["walk"] - 0.1)))
    for _ in range(rng.integers(1, 5)):  # poles (with a sign or not) at the sidewalk's edge
        name = "left" if rng.random() < 0.5 else "right"
        side = sides[name]
        objects.append((rng.uniform(0.45, 0.95) * s_max, "pole",
                        side["sign"] * (side["road"] + rng.uniform(0.1, 0.35))))
    for name, side in sides.items():  # trees on the terrain band
        if side["grass"] - side["walk"] > 0.8:
            for _ in range(rng.integers(0, 4)):
                objects.append((rng.uniform(0.15, 0.8) * s_max, "tree",
                                side["sign"] * rng.uniform(side["walk"] + 0.4,
                                                           side["grass"] - 0.2)))
    if rng.random() < 0.3:  # clutter (labelled 'static', ignored in evaluation)
        name = "left" if rng.random() < 0.5 else "right"
        side = sides[name]
        objects.append((rng.uniform(0.3, 0.9) * s_max, "static",
                        side["sign"] * rng.uniform(side["road"] + 0.2, side["walk"] - 0.2)))
    for s, kind, x_lat in sorted(objects, key=lambda o: o[0]):  # far to near
        foot_y, foot_x = y_h + s, x_v + x_lat * s
        {"car": _car, "person": _person, "pole": _pole, "tree": _tree,
         "static": _static}[kind](c, foot_y, foot_x, s, px)

    # ----------------------------------------------------------------- ego vehicle etc.
    if rng.random() < 0.6:
        hood = h * rng.uniform(0.05, 0.11)
        bulge = h * rng.uniform(0.0, 0.04)
        curve = h - hood - bulge * (1 - ((c.xs - w / 2) / (w / 2)) ** 2)
        mask = np.broadcast_to(c.ys >= curve, (h, w))
        base = np.full(3, rng.uniform(20, 70), np.float32)
        glare = np.clip(1 - np.abs(c.ys - curve - hood * 0.3) / (hood * 0.25 + 1), 0, 1) * 40
        c.paint(mask, _shade(base, glare + 3 * c.fine()), EGO)
    if rng.random() < 0.3:
        size = h * rng.uniform(0.06, 0.15)
        mask = (c.ys > h - size + c.xs * (size / (w * 0.15))) | \
               (c.ys > h - size + (w - 1 - c.xs) * (size / (w * 0.15)))
        c.paint(mask, np.zeros(3, np.float32), BORDER)
    if rng.random() < 0.5:
        rows = max(1, int(round(h * 0.008)))
        mask = np.zeros((h, w), bool)
        mask[-rows:] = True
        c.paint(mask, np.zeros(3, np.float32), UNLABELED)

    # ---------------------------------------------------------------------- lighting
    img = c.img
    if rng.random() < 0.5:  # a cast shadow across the ground from one side's facades
        sgn = 1.0 if rng.random() < 0.5 else -1.0
        slope = rng.uniform(0.5, 2.5)
        line = (c.xs - x_v) * sgn + (c.ys - y_h) * slope * rng.uniform(-0.5, 0.5)
        shadow = (line > rng.uniform(-0.2, 0.3) * w) & below
        soft = cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), 2.0 * px + 0.5)
        img *= (1.0 - soft * rng.uniform(0.15, 0.35))[..., None]
    gain = rng.uniform(0.88, 1.12)
    cast = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    img *= gain * cast
    img = np.clip(img, 0, 255) / 255.0
    img = np.power(img, np.float32(rng.uniform(0.85, 1.15))) * 255.0
    img += c.fine(h, w)[..., None] * rng.uniform(1.5, 3.0)
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return rgb, c.ids


# --------------------------------------------------------------------------- textures

def _road_texture(c, gx, gz, px, road_l, road_r):
    rng = c.rng
    base = _tint(np.full(3, rng.uniform(70, 110)), 0.05, rng)
    mod = c.fine() * rng.uniform(8, 14) + c.smooth(25 * px) * rng.uniform(4, 9)
    tex = _shade(base, mod)
    paint = _tint(np.full(3, rng.uniform(205, 240)), 0.03, rng)
    period = rng.uniform(3, 6)
    # dashed centre line (or lane divider) and, sometimes, solid edge lines
    lane = road_l + (road_r - road_l) * rng.uniform(0.4, 0.6)
    marks = (np.abs(gx - lane) < 0.05) & (np.mod(gz / period, 1.0) < 0.5)
    if rng.random() < 0.5:
        marks |= (np.abs(gx - (road_r - 0.15)) < 0.04) | (np.abs(gx - (road_l + 0.15)) < 0.04)
    np.copyto(tex, np.broadcast_to(paint, tex.shape), where=marks[..., None])
    return tex


def _sidewalk_texture(c, gx, gz, px):
    rng = c.rng
    if rng.random() < 0.6:
        base = _tint(np.full(3, rng.uniform(125, 175)), 0.05, rng)
    else:  # red-brown pavers, close to terrain and facades
        base = _tint(np.array([150, 120, 112], np.float32), 0.08, rng)
    tile_x, tile_z = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.7)
    joints = (np.mod(gx / tile_x, 1.0) < 0.07) | (np.mod(gz / tile_z, 1.0) < 0.09)
    mod = c.fine() * rng.uniform(4, 8) + c.smooth(15 * px) * 5 - joints * rng.uniform(25, 45)
    return _shade(base, mod)


def _terrain_texture(c, gz, px):
    """Grass (mowing stripes along the depth) or patchy soil: smooth next to leaves."""
    rng = c.rng
    base = np.array([rng.uniform(120, 165), rng.uniform(135, 170), rng.uniform(65, 100)],
                    np.float32)
    mod = c.smooth(12 * px) * 10 + c.fine() * 5
    if rng.random() < 0.6:
        stripes = np.mod(gz / rng.uniform(1.5, 3.0), 1.0) < 0.5
        mod = mod + np.where(stripes, 1.0, -1.0) * rng.uniform(8, 14)
    return base + mod[..., None] * np.array([1.0, 1.15, 0.5], np.float32)


def _vegetation_texture(c, px, h=None, w=None):
    """Leaves: strong medium-frequency light/dark clusters over a green-brown base."""
    rng = c.rng
    base = np.array([rng.uniform(45, 100), rng.uniform(80, 130), rng.uniform(25, 65)],
                    np.float32)
    leaves = c.smooth(2.5 * px, h, w) * 28 + c.smooth(7 * px, h, w) * 18
    return base + leaves[..., None] * np.array([0.8, 1.0, 0.6], np.float32) + \
        c.fine(h, w)[..., None] * 6


def _facades(c, sign, facade_x, x_v, y_h, focal, px, z_end):
    """Buildings, walls and trees on a vertical plane at lateral distance ``facade_x``.

    The plane is cut into segments along the street; each is drawn on its own column range
    only (far segments are a few pixels wide), in facade coordinates: depth along the street
    and height above the ground, both in camera heights.
    """
    rng = c.rng
    z_far = min(focal * facade_x / 2.0, z_end)  # beyond: narrower than 2 px, or hidden
    z = rng.uniform(1.0, 6.0)
    while z < z_far:
        z1 = min(z + rng.uniform(5, 25) * max(1.0, z / 40.0), z_far)
        kind = rng.choice(["building", "wall", "trees", "gap"], p=[0.45, 0.25, 0.18, 0.12])
        near, far = focal * facade_x / z, focal * facade_x / z1  # column offsets from x_v
        if sign > 0:
            xa, xb = int(np.ceil(x_v + far)), int(np.ceil(x_v + near))
        else:
            xa, xb = int(np.floor(x_v - near)) + 1, int(np.floor(x_v - far)) + 1
        xa, xb = max(xa, 0), min(xb, c.w)
        z = z1
        if xb <= xa or kind == "gap":
            continue
        cols = (np.arange(xa, xb, dtype=np.float32)[None, :] - x_v) * sign
        s_col = np.maximum(cols, 0.5) / facade_x  # px per unit of the plane at the column
        depth = focal / s_col
        height = (y_h + s_col - c.ys) / s_col  # above the ground, (h, columns)
        shape = height.shape
        box = (0, xa)
        if kind == "building":
            mask = (height >= 0) & (height < rng.uniform(3, 14))
            c.paint(mask, _building_texture(c, depth, height, px), BUILDING, box=box)
        else:
            canopy = rng.uniform(2.0, 6.0) + c.smooth(6 * px, 1, shape[1]) * 0.6
            mask = (height >= 0) & (height < canopy)
            c.paint(mask, _vegetation_texture(c, px, *shape), VEGETATION, box=box)
            if kind == "wall":  # a low wall in front of the trees
                top = rng.uniform(1.5, 3.0)
                mask = (height >= 0) & (height < top)
                c.paint(mask, _wall_texture(c, depth, height, top, px), WALL, box=box)


def _building_texture(c, depth, height, px):
    rng = c.rng
    shape = height.shape
    base = _tint(_FACADE_COLORS[rng.integers(0, len(_FACADE_COLORS))], 0.06, rng)
    glass = np.array([rng.uniform(40, 80), rng.uniform(50, 90), rng.uniform(70, 115)],
                     np.float32)
    bay, floor = rng.uniform(1.6, 3.0), rng.uniform(1.9, 2.6)
    win_w, win_h = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
    windows = (np.mod(depth / bay, 1.0) < win_w) & (np.mod(height / floor, 1.0) > 1 - win_h) \
        & (height > floor * 0.9)
    mod = c.fine(*shape) * 5 + c.smooth(30 * px, *shape) * 6
    tex = _shade(base, mod)
    np.copyto(tex, _shade(glass, c.fine(*shape) * 6 + c.smooth(4 * px, *shape) * 10),
              where=windows[..., None])
    return tex


def _wall_texture(c, depth, height, top, px):
    rng = c.rng
    shape = height.shape
    # concrete greys and bricks: half of it shared with the facades' palette
    base = _tint(_WALL_COLORS[rng.integers(0, len(_WALL_COLORS))], 0.06, rng)
    course = rng.uniform(0.3, 0.45)
    brick = rng.uniform(0.7, 1.1)
    row = np.floor(height / course)
    mortar = (np.mod(height / course, 1.0) < 0.2) | \
        (np.mod(depth / brick + 0.5 * np.mod(row, 2), 1.0) < 0.1)
    cap = height > top - 0.15  # coping stones along the top
    mod = c.fine(*shape) * 6 + c.smooth(8 * px, *shape) * 6 - mortar * rng.uniform(20, 35) \
        + cap * rng.uniform(25, 45)
    return _shade(base, mod)


def _end_block(c, x_v, y_h, facade_x, s, px):
    """A building or tree row across the street's far end (``s`` px per unit there)."""
    rng = c.rng
    x0, x1 = int(x_v - facade_x["left"] * s), int(np.ceil(x_v + facade_x["right"] * s))
    top = rng.uniform(2.5, 7.0)
    y0, y1 = int(y_h - (top - 1) * s), int(np.ceil(y_h + s))
    x0, x1, y0, y1 = max(x0, 0), min(x1, c.w), max(y0, 0), min(y1, c.h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.ones((y1 - y0, x1 - x0), bool)
    if rng.random() < 0.7:  # a facade seen from the front: windows on (lateral, height)
        lateral = (np.arange(x0, x1, dtype=np.float32)[None, :] - x_v) / s + 50.0
        height = (y_h + s - np.arange(y0, y1, dtype=np.float32)[:, None]) / s
        height = np.broadcast_to(height, mask.shape)
        c.paint(mask, _building_texture(c, lateral, height, px), BUILDING, box=(y0, x0))
    else:
        c.paint(mask, _vegetation_texture(c, px, y1 - y0, x1 - x0), VEGETATION, box=(y0, x0))


# ---------------------------------------------------------------------------- objects

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


def _car(c, foot_y, foot_x, s, px):
    rng = c.rng
    width, height = rng.uniform(1.3, 1.6) * s, rng.uniform(1.0, 1.25) * s
    box = _box(c, foot_x - width / 2 - 2, foot_y - height - 2, foot_x + width / 2 + 2,
               foot_y + 0.12 * s + 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    ox, oy = foot_x - x0, foot_y - y0  # foot point in the local box

    # shadow on the road below the car (stays road)
    shadow = _local_mask(shape, lambda m: cv2.ellipse(
        m, (int(ox), int(oy)), (int(width * 0.6), max(int(0.1 * s), 1)), 0, 0, 360, 1, -1))
    local = c.img[y0:y1, x0:x1]
    local[shadow] *= 0.45

    color = _tint(_CAR_COLORS[rng.integers(0, len(_CAR_COLORS))], 0.08, rng)
    body_top = oy - height * 0.55
    cabin_top = oy - height
    body = np.array([[ox - width / 2, oy - 0.08 * s], [ox + width / 2, oy - 0.08 * s],
                     [ox + width / 2, body_top], [ox - width / 2, body_top]], np.float32)
    cabin = np.array([[ox - width * 0.46, body_top], [ox + width * 0.46, body_top],
                      [ox + width * 0.36, cabin_top], [ox - width * 0.36, cabin_top]],
                     np.float32)
    window = np.array([[ox - width * 0.40, body_top - 0.04 * s],
                       [ox + width * 0.40, body_top - 0.04 * s],
                       [ox + width * 0.33, cabin_top + 0.06 * s],
                       [ox - width * 0.33, cabin_top + 0.06 * s]], np.float32)
    r_wheel = max(int(0.17 * s), 1)

    def shape_all(m):
        cv2.fillPoly(m, [np.round(body).astype(np.int32), np.round(cabin).astype(np.int32)], 1)
        for wx in (ox - width * 0.36, ox + width * 0.36):
            cv2.ellipse(m, (int(wx), int(oy - r_wheel * 0.8)), (int(0.14 * s) + 1, r_wheel),
                        0, 0, 360, 1, -1)

    mask = _local_mask(shape, shape_all)
    ys = np.arange(shape[0], dtype=np.float32)[:, None]
    shading = (ys - cabin_top) / max(height, 1.0) * 25.0 - 12.0  # lighter roof, darker sills
    tex = _shade(color, -shading + c.fine(*shape) * 4)
    c.paint(mask, tex, CAR, box=(y0, x0))
    win = _local_mask(shape, lambda m: cv2.fillPoly(m, [np.round(window).astype(np.int32)], 1))
    glass = np.array([rng.uniform(25, 60), rng.uniform(30, 65), rng.uniform(40, 80)], np.float32)
    c.paint(win & mask, _shade(glass, c.smooth(5 * px, *shape) * 8), CAR, box=(y0, x0))
    wheels = mask & (ys > oy - 0.3 * s)
    wheels &= ~_local_mask(shape, lambda m: cv2.fillPoly(m, [np.round(body).astype(np.int32)], 1))
    c.paint(wheels, np.full(3, 22.0, np.float32), CAR, box=(y0, x0))
    # lights: small bright or red marks on the body corners
    light = np.array([rng.uniform(150, 230), rng.uniform(10, 60), rng.uniform(10, 50)],
                     np.float32)
    for lx in (ox - width * 0.42, ox + width * 0.42):
        lb = _local_mask(shape, lambda m: cv2.rectangle(
            m, (int(lx - 0.07 * s), int(body_top + 0.06 * s)),
            (int(lx + 0.07 * s), int(body_top + 0.16 * s)), 1, -1))
        c.paint(lb & mask, light, CAR, box=(y0, x0))


def _person(c, foot_y, foot_x, s, px):
    rng = c.rng
    tall = rng.uniform(1.15, 1.45) * s
    wide = tall * rng.uniform(0.42, 0.5)
    box = _box(c, foot_x - wide, foot_y - tall - 2, foot_x + wide, foot_y + 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    ox, oy = foot_x - x0, foot_y - y0
    head_r = tall * 0.07
    neck = oy - tall + 2 * head_r
    hip = oy - tall * 0.48
    stride = rng.uniform(0.0, 0.1) * tall
    trousers = _tint(np.array([rng.uniform(20, 110)] * 3, np.float32), 0.25, rng)
    shirt = rng.uniform(20, 230, 3).astype(np.float32)
    skin = _tint(np.array([200, 160, 130], np.float32), 0.2, rng)

    def legs(m):
        for dx in (-1, 1):
            pts = np.array([[ox + dx * wide * 0.12, hip], [ox + dx * wide * 0.42, hip],
                            [ox + dx * (stride / 2 + wide * 0.2), oy],
                            [ox + dx * (stride / 2 - wide * 0.05), oy]], np.float32)
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)

    def torso(m):
        shoulder = neck + head_r * 0.3
        pts = np.array([[ox - wide * 0.45, shoulder], [ox + wide * 0.45, shoulder],
                        [ox + wide * 0.48, hip + tall * 0.04],
                        [ox - wide * 0.48, hip + tall * 0.04]], np.float32)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        for dx in (-1, 1):  # arms
            arm = np.array([[ox + dx * wide * 0.45, neck + head_r * 0.4],
                            [ox + dx * wide * 0.62, neck + head_r * 0.4],
                            [ox + dx * wide * 0.66, hip], [ox + dx * wide * 0.50, hip]],
                           np.float32)
            cv2.fillPoly(m, [np.round(arm).astype(np.int32)], 1)

    def head(m):
        cv2.ellipse(m, (int(round(ox)), int(round(neck - head_r))),
                    (max(int(head_r * 0.85), 1), max(int(head_r), 1)), 0, 0, 360, 1, -1)

    noise = c.fine(*shape) * 5
    c.paint(_local_mask(shape, legs), _shade(trousers, noise), PERSON, box=(y0, x0))
    folds = c.smooth(3 * px, *shape) * 10
    c.paint(_local_mask(shape, torso), _shade(shirt, noise + folds), PERSON, box=(y0, x0))
    c.paint(_local_mask(shape, head), _shade(skin, noise), PERSON, box=(y0, x0))


def _pole(c, foot_y, foot_x, s, px):
    rng = c.rng
    thick = max(rng.uniform(0.2, 0.3) * s, 2.0)
    tall = rng.uniform(2.2, 3.0) * s
    with_sign = rng.random() < 0.75
    box = _box(c, foot_x - thick / 2, foot_y - tall, foot_x + thick / 2, foot_y)
    if box is not None:
        x0, y0, x1, y1 = box
        shape = (y1 - y0, x1 - x0)
        xs = np.arange(shape[1], dtype=np.float32)[None, :] + x0 - foot_x
        metal = _tint(np.full(3, rng.uniform(50, 150)), 0.04, rng)
        cyl = (1 - (2 * xs / thick) ** 2) * 25 - 10  # a cylinder's highlight
        tex = _shade(metal, cyl + c.fine(*shape) * 4)
        c.paint(np.ones(shape, bool), tex, POLE, box=(y0, x0))
    if with_sign:
        size = rng.uniform(0.7, 1.1) * s
        cy = foot_y - tall + size * 0.5 + rng.uniform(0, 0.4) * s
        box = _box(c, foot_x - size / 2, cy - size / 2, foot_x + size / 2, cy + size / 2)
        if box is None:
            return
        x0, y0, x1, y1 = box
        shape = (y1 - y0, x1 - x0)
        ox, oy = foot_x - x0, cy - y0
        kind = rng.integers(0, 3)
        r = size / 2
        if kind == 0:  # round: red rim, white or blue face
            outer = lambda m: cv2.circle(m, (int(ox), int(oy)), max(int(r), 1), 1, -1)
            inner = lambda m: cv2.circle(m, (int(ox), int(oy)), max(int(r * 0.72), 1), 1, -1)
        elif kind == 1:  # triangle
            tri = np.array([[ox, oy - r], [ox + r, oy + r * 0.8], [ox - r, oy + r * 0.8]])
            tri_in = (tri - [ox, oy]) * 0.6 + [ox, oy]
            outer = lambda m: cv2.fillPoly(m, [np.round(tri).astype(np.int32)], 1)
            inner = lambda m: cv2.fillPoly(m, [np.round(tri_in).astype(np.int32)], 1)
        else:  # rectangle
            outer = lambda m: cv2.rectangle(m, (int(ox - r), int(oy - r * 0.7)),
                                            (int(ox + r), int(oy + r * 0.7)), 1, -1)
            inner = lambda m: cv2.rectangle(m, (int(ox - r * 0.8), int(oy - r * 0.5)),
                                            (int(ox + r * 0.8), int(oy + r * 0.5)), 1, -1)
        palettes = [([200, 30, 30], [235, 235, 230]), ([30, 70, 170], [235, 235, 230]),
                    ([235, 200, 30], [40, 40, 40]), ([30, 120, 60], [235, 235, 230]),
                    ([200, 30, 30], [30, 70, 170])]
        rim, face = palettes[rng.integers(0, len(palettes))]
        noise = c.fine(*shape) * 5
        c.paint(_local_mask(shape, outer), _shade(_tint(rim, 0.1, rng), noise), SIGN,
                box=(y0, x0))
        c.paint(_local_mask(shape, inner), _shade(_tint(face, 0.06, rng), noise), SIGN,
                box=(y0, x0))


def _tree(c, foot_y, foot_x, s, px):
    rng = c.rng
    trunk_h, trunk_w = rng.uniform(1.2, 2.2) * s, max(rng.uniform(0.12, 0.2) * s, 2.0)
    crown = rng.uniform(0.7, 1.3) * s
    box = _box(c, foot_x - crown * 1.3, foot_y - trunk_h - crown * 1.8, foot_x + crown * 1.3,
               foot_y)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    ox, oy = foot_x - x0, foot_y - y0
    cy = oy - trunk_h - crown * 0.6

    def trunk(m):
        cv2.rectangle(m, (int(ox - trunk_w / 2), int(oy - trunk_h - crown * 0.3)),
                      (int(ox + trunk_w / 2), int(oy)), 1, -1)

    def canopy(m):
        for _ in range(4):
            dx, dy = rng.normal(0, 0.35, 2) * crown
            cv2.circle(m, (int(ox + dx), int(cy + dy)), max(int(crown * rng.uniform(0.55, 0.8)), 1),
                       1, -1)

    bark = _tint(np.array([85, 65, 45], np.float32), 0.15, rng)
    c.paint(_local_mask(shape, trunk), _shade(bark, c.fine(*shape) * 6), VEGETATION, box=(y0, x0))
    c.paint(_local_mask(shape, canopy), _vegetation_texture(c, px, *shape), VEGETATION,
            box=(y0, x0))


def _static(c, foot_y, foot_x, s, px):
    rng = c.rng
    wd, ht = rng.uniform(0.3, 0.6) * s, rng.uniform(0.4, 0.8) * s
    box = _box(c, foot_x - wd / 2, foot_y - ht, foot_x + wd / 2, foot_y)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    color = rng.uniform(30, 200, 3).astype(np.float32)
    c.paint(np.ones(shape, bool), _shade(color, c.fine(*shape) * 5), STATIC, box=(y0, x0))


# ------------------------------------------------------------------------------ writing

def scene_rng(seed, split, index):
    """The generator of image ``index`` of ``split`` for ``seed``."""
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def make_synthetic_cityscapes(out_root, num_train=200, num_val=50, size=(256, 512), seed=0,
                              num_test=0, progress=True, workers=None):
    """Write a synthetic dataset in the Cityscapes layout.

    Parameters
    ----------
    out_root : str
        Dataset root; ``leftImg8bit/`` and ``gtFine/`` are created under it.
    num_train, num_val, num_test : int
        Images per split (test images get no annotation, like the real test split's).
    size : (int, int)
        (height, width) of the images; 256x512 by default, 1024x2048 like the real data.
    seed : int
        Scenes are a deterministic function of (seed, split, index).
    progress : bool
        Show a tqdm progress bar.
    workers : int, optional
        Rendering processes (default: the number of cores). The files do not depend on it.

    Returns
    -------
    dict
        ``{split: number of images}``.
    """
    import multiprocessing

    from tqdm import tqdm

    height, width = int(size[0]), int(size[1])
    if height < 32 or width < 32:
        raise ValueError("size %dx%d is too small for a street scene (minimum 32x32)"
                         % (height, width))
    jobs = []
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        if count < 0:
            raise ValueError("number of %s images must be >= 0, got %d" % (split, count))
        cities = SPLIT_CITIES[split]
        for i in range(count):
            jobs.append((out_root, seed, split, cities[i % len(cities)], i, height, width))
    if workers is None:  # a process per core, but at least 8 scenes each (start-up ~1 s)
        workers = min(os.cpu_count() or 1, len(jobs) // 8)
    workers = max(1, min(int(workers), len(jobs)))
    bar = tqdm(total=len(jobs), desc="synthetic scenes", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            _write_scene(job)
            bar.update()
    else:
        # 'spawn': the parent may hold MXNet's and OpenCV's thread pools, which fork would copy
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_scene, jobs, chunksize=4):
                bar.update()
    bar.close()
    counts = {"train": num_train, "val": num_val, "test": num_test}
    logger.info("wrote %s synthetic images of %dx%d to %s", counts, height, width, out_root)
    return counts


def _write_scene(job):
    """Render and write one scene (a pool task: a module-level function of plain values)."""
    out_root, seed, split, city, i, height, width = job
    rgb, ids = render_scene(scene_rng(seed, split, i), height, width)
    stem = "%s_%06d_%06d" % (city, i, 19)
    img_dir = os.path.join(out_root, "leftImg8bit", split, city)
    os.makedirs(img_dir, exist_ok=True)
    _imwrite(os.path.join(img_dir, stem + "_leftImg8bit.png"),
             cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if split != "test":
        gt_dir = os.path.join(out_root, "gtFine", split, city)
        os.makedirs(gt_dir, exist_ok=True)
        _imwrite(os.path.join(gt_dir, stem + "_gtFine_labelIds.png"), ids)


def _imwrite(path, array):
    if not cv2.imwrite(path, array):
        raise IOError("could not write %s" % path)
