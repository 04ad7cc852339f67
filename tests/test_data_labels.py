"""Label tables against the official Cityscapes table (cityscapesScripts) and the VOC devkit."""
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs

from duc_hdc.data import labels


def _official_train_id(label_id):
    train_id = cs.id2label[label_id].trainId
    return 255 if train_id in (255, -1) else train_id


def test_cityscapes_id_to_train_id_matches_official_table():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    expected = np.vectorize(_official_train_id)(ids)
    out = labels.cityscapes_id_to_train_id(ids)
    assert out.dtype == np.uint8 and out.shape == ids.shape
    np.testing.assert_array_equal(out, expected)
    # int arrays and out-of-table values (converters reject those first) -> 255
    np.testing.assert_array_equal(labels.cityscapes_id_to_train_id(np.array([7, 26, 40, -1])),
                                  [0, 13, 255, 255])


def test_train_id_to_id_inverts_on_evaluated_classes():
    train_ids = np.array(list(range(19)) + [255], np.uint8)
    ids = labels.cityscapes_train_id_to_id(train_ids)
    for t, i in zip(train_ids[:-1], ids[:-1]):
        assert cs.id2label[int(i)].trainId == t
    assert ids[-1] == 0  # ignore -> 'unlabeled'
    np.testing.assert_array_equal(labels.cityscapes_id_to_train_id(ids[:-1]), train_ids[:-1])


def test_tables_names_colors():
    city = labels.DATASETS["cityscapes"]
    assert city.num_classes == 19 and city.ignore_label == 255
    assert city.names == [cs.trainId2label[t].name for t in range(19)]
    assert city.colors == [tuple(cs.trainId2label[t].color) for t in range(19)]
    voc = labels.DATASETS["voc"]
    assert voc.num_classes == 21 and voc.names[0] == "background" and voc.names[15] == "person"
    # the devkit's colours: aeroplane (128, 0, 0), person (192, 128, 128), boundary (224, 224, 192)
    cmap = labels.voc_colormap()
    assert tuple(cmap[1]) == (128, 0, 0) and tuple(cmap[15]) == (192, 128, 128)
    assert tuple(cmap[255]) == (224, 224, 192)
    road = labels.DATASETS["kitti_road"]
    assert road.names == ["non-road", "road"] and road.num_classes == 2


def test_colorize_and_overlay():
    ids = np.array([[0, 13, 255], [10, 18, 200]], np.uint8)
    rgb = labels.colorize(ids, "cityscapes")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[0, 2]) == (0, 0, 0) and tuple(rgb[1, 2]) == (0, 0, 0)
    assert tuple(labels.colorize(np.array([[1]]), "kitti_road")[0, 0]) == (255, 0, 255)
    img = np.full((2, 3, 3), 100, np.uint8)
    over = labels.overlay(img, ids, "cityscapes", alpha=0.5)
    assert tuple(over[0, 0]) == (114, 82, 114)  # (100 + 128) / 2, (100 + 64) / 2, ...
    assert tuple(over[0, 2]) == (100, 100, 100)  # ignored pixels keep the image
    with pytest.raises(ValueError, match="unknown dataset 'ade'"):
        labels.colorize(ids, "ade")
    with pytest.raises(ValueError, match="2x3"):
        labels.overlay(np.zeros((4, 4, 3), np.uint8), ids)


def test_invalid_values():
    assert labels.invalid_values(np.array([0, 7, 33]), "cityscapes") == []
    assert labels.invalid_values(np.array([0, 34, 200]), "cityscapes") == [34, 200]
    assert labels.invalid_values(np.array([0, 20, 255]), "voc") == []
    assert labels.invalid_values(np.array([21, 254]), "voc") == [21, 254]
