"""Procedural street scenes: the renderer behind :mod:`duc_hdc.demo.synthetic`.

:func:`render_scene` draws one one-point-perspective street (see the module docstring of
:mod:`duc_hdc.demo.synthetic` for what is in it and why) from a numpy generator, returning the
RGB image and its official Cityscapes labelIds.
"""
import cv2
import numpy as np

from .canvas import (BORDER, BUILDING, EGO, ROAD, SIDEWALK, TERRAIN, UNLABELED, USED_LABEL_IDS,
                     VEGETATION, WALL, _FACADE_COLORS, _WALL_COLORS, _Canvas, _shade, _tint,
                     _vegetation_texture)
from .objects import _car, _person, _pole, _static, _tree

__all__ = ["render_scene", "USED_LABEL_IDS"]

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
