"""Objects of the synthetic scenes, standing on the ground plane: cars, persons, poles with
signs, trees and static clutter."""
import cv2
import numpy as np

from .canvas import (CAR, PERSON, POLE, SIGN, STATIC, VEGETATION, _CAR_COLORS, _box, _local_mask,
                     _shade, _tint, _vegetation_texture)

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
