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

from ..fileio import atomic_png
from ..stops import quiet_worker
from .scenes import USED_LABEL_IDS, render_scene

logger = logging.getLogger(__name__)

__all__ = ["render_scene", "make_synthetic_cityscapes", "SPLIT_CITIES", "USED_LABEL_IDS"]

#: City folder of each split (names without underscores, as Cityscapes file names need).
SPLIT_CITIES = {"train": ["synthtown", "synthville"], "val": ["synthberg"], "test": ["synthdorf"]}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


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
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=quiet_worker) as pool:
            for _ in pool.imap_unordered(_write_scene, jobs, chunksize=4):
                bar.update()
    bar.close()
    counts = {"train": num_train, "val": num_val, "test": num_test}
    logger.debug("wrote %s synthetic images of %dx%d to %s", counts, height, width, out_root)
    return counts


def _write_scene(job):
    """Render and write one scene (a pool task: a module-level function of plain values)."""
    out_root, seed, split, city, i, height, width = job
    rgb, ids = render_scene(scene_rng(seed, split, i), height, width)
    stem = "%s_%06d_%06d" % (city, i, 19)
    if split != "test":  # the labels first: a stopped run leaves no image without its label
        gt_dir = os.path.join(out_root, "gtFine", split, city)
        os.makedirs(gt_dir, exist_ok=True)
        _imwrite(os.path.join(gt_dir, stem + "_gtFine_labelIds.png"), ids)
        # what cityscapesScripts' evaluation also reads (16-bit; no object instances here, so
        # every pixel holds its labelId, as the real files do for classes without instances)
        _imwrite(os.path.join(gt_dir, stem + "_gtFine_instanceIds.png"), ids.astype("uint16"))
    img_dir = os.path.join(out_root, "leftImg8bit", split, city)
    os.makedirs(img_dir, exist_ok=True)
    _imwrite(os.path.join(img_dir, stem + "_leftImg8bit.png"),
             cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _imwrite(path, array):
    atomic_png(path, array)  # a killed run leaves no truncated PNG for the converter
