"""predict on the inputs engineers feed it: output folder = input folder, runs repeated."""
import os

import cv2
import numpy as np

from duc_hdc import get_model
from duc_hdc.inference.predict import predict_paths, prediction_report
from duc_hdc.inference.segmenter import Segmenter


def _segmenter():
    return Segmenter(get_model("duc_hdc_resnet18", classes=5, base_width=8))


def _png(path, seed, h=16, w=24):
    rgb = np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)
    assert cv2.imwrite(str(path), rgb)
    return path.read_bytes()


def _images(folder):
    return sorted(n for n in os.listdir(str(folder)) if n.endswith(".png"))


def test_output_folder_equal_to_input_folder_never_overwrites_an_input(tmp_path):
    seg = _segmenter()
    src = tmp_path / "photos"
    src.mkdir()
    inputs = {name: _png(src / name, seed) for seed, name in
              enumerate(["a.png", "a_color.png", "b.png"])}  # a_color.png: a real photo
    result = predict_paths(seg, [str(src)], str(src), progress=False)
    for name, data in inputs.items():
        assert (src / name).read_bytes() == data, "%s was overwritten" % name
    # a.png's colour map would replace the photo a_color.png: a.png is skipped, by name
    skipped = dict(result["skipped"])
    assert list(skipped) == [str(src / "a.png")]
    assert "a_color.png" in skipped[str(src / "a.png")]
    assert "is an input of this run" in skipped[str(src / "a.png")]
    assert result["images"] == 2 and prediction_report(result, str(src))[2] == 3
    first = _images(src)
    assert first == ["a.png", "a_color.png", "a_color_color.png", "a_color_overlay.png",
                     "a_color_trainIds.png", "b.png", "b_color.png", "b_overlay.png",
                     "b_trainIds.png"]
    # the same run again: the earlier outputs are replaced, not predicted as new inputs
    again = predict_paths(seg, [str(src)], str(src), progress=False)
    assert _images(src) == first
    assert again["images"] == 2 and list(dict(again["skipped"])) == [str(src / "a.png")]
    for name, data in inputs.items():
        assert (src / name).read_bytes() == data


def test_same_run_twice_into_the_input_folder_and_by_glob(tmp_path):
    seg = _segmenter()
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "x.png", 3)
    for run in range(2):
        result = predict_paths(seg, [str(src)], str(src), progress=False)
        assert (result["images"], result["skipped"]) == (1, []), run
        assert prediction_report(result, str(src))[2] == 0
        assert _images(src) == ["x.png", "x_color.png", "x_overlay.png", "x_trainIds.png"]
    result = predict_paths(seg, [str(src / "*.png")], str(src), progress=False)
    assert (result["images"], result["skipped"]) == (1, [])
    assert _images(src) == ["x.png", "x_color.png", "x_overlay.png", "x_trainIds.png"]


def _corrupt(data, start, count):
    data = bytearray(data)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    return bytes(data)


def test_corrupt_files_among_good_ones_are_named_without_library_noise(tmp_path, capfd):
    from duc_hdc import cli
    from duc_hdc.models.sidecar import write_sidecar

    net = get_model("duc_hdc_resnet18", classes=5, base_width=8)
    params = str(tmp_path / "tiny.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "good.png", 0, 64, 96)
    rgb = cv2.resize(cv2.imread(str(src / "good.png")), (96, 64))
    jpeg = cv2.imencode(".jpg", np.kron(rgb, np.ones((2, 2, 1), np.uint8)))[1].tobytes()
    png = cv2.imencode(".png", rgb)[1].tobytes()
    bmp = cv2.imencode(".bmp", rgb)[1].tobytes()
    # damaged inside, intact ends: libjpeg decodes it with a part missing; libpng gives up
    (src / "flipped.jpg").write_bytes(_corrupt(jpeg, len(jpeg) // 2, 50))
    (src / "flipped.png").write_bytes(_corrupt(png, 200, 200))
    (src / "cut.bmp").write_bytes(bmp[:len(bmp) // 2])
    capfd.readouterr()
    status = cli.main(["predict", "--model", params, str(src), "--out", str(tmp_path / "out"),
                       "--no-progress"])
    out, err = capfd.readouterr()
    assert status == 3
    assert "1 image(s)" in out
    assert os.path.exists(str(tmp_path / "out" / "good_trainIds.png"))
    for name in ("flipped.jpg", "flipped.png", "cut.bmp"):
        assert "  %s: corrupt" % (src / name) in err, name
        assert not os.path.exists(str(tmp_path / "out" / (name[:-4] + "_trainIds.png")))
    # no raw library line (libpng, libjpeg, OpenCV's log) of its own
    for line in err.splitlines():
        assert not line.startswith(("libpng", "Corrupt JPEG", "Premature end", "[")), line
        assert "OpenCV(" not in line and "loadsave.cpp" not in line, line


def test_another_threads_stderr_is_not_swallowed_while_an_image_decodes(capfd):
    """The decoders' fd-2 text is caught while one image decodes; a log line another thread
    wrote to fd 2 in that window (training's log while a num_workers=0 loader thread decodes)
    was caught with it and never shown. It is shown now; the decoder's line is not."""
    import threading

    from duc_hdc.data.decoder_messages import decoder_messages

    def other():
        os.write(2, b"INFO iteration 40: loss 0.31\n")

    with decoder_messages() as lines:
        os.write(2, b"libpng error: IDAT: invalid code lengths set\n")  # as libpng writes it
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert lines == ["libpng error: IDAT: invalid code lengths set"]
    err = capfd.readouterr().err
    assert "INFO iteration 40: loss 0.31" in err and "libpng" not in err
