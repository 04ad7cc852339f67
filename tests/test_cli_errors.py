"""Bad input on the command line: one ``error:`` line naming the path and what would be right."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import data_fixtures as fx
from duc_hdc import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capsys, argv):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    return rc, err, lines


def _one_error_line(rc, err, lines):
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "[Errno" not in err, err
    return lines[0]


def _existing_rec(tmp_path):
    prefix = str(tmp_path / "out" / "old")
    os.makedirs(os.path.dirname(prefix))
    for ext in (".rec", ".idx", ".lst"):
        with open(prefix + ext, "wb") as f:
            f.write(b"previous conversion " + ext.encode())
    return prefix


def _intact(prefix):
    for ext in (".rec", ".idx", ".lst"):
        with open(prefix + ext, "rb") as f:
            assert f.read() == b"previous conversion " + ext.encode()
    assert not any(p.endswith(".part") for p in os.listdir(os.path.dirname(prefix)))


# ------------------------------------------------------------------------ duc-hdc data DATASET
@pytest.mark.parametrize("dataset,split,layout", [
    ("cityscapes", "train", "leftImg8bit/train/<city>/*_leftImg8bit.png"),
    ("voc", "val", "ImageSets/Segmentation/val.txt"),
    ("kitti_road", "train", "training/image_2/<cat>_<num>.png"),
])
@pytest.mark.parametrize("missing", ["root", "layout"])
def test_data_missing_root_or_layout(capsys, tmp_path, dataset, split, layout, missing):
    prefix = _existing_rec(tmp_path)
    root = str(tmp_path / "nonexistent")
    if missing == "layout":  # the folder exists, but not in the dataset's layout
        os.makedirs(os.path.join(root, "something_else"))
    line = _one_error_line(*_run(capsys, ["data", dataset, "--root", root, "--split", split,
                                          "--out", prefix, "--no-progress"]))
    assert root in line and layout in line, line
    assert "--skip-bad" not in line, line  # skipping files cannot help an empty split
    _intact(prefix)


def _corrupt(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image" * 10)


@pytest.mark.parametrize("dataset", ["cityscapes", "voc", "kitti_road"])
def test_data_one_corrupt_image(capsys, tmp_path, dataset):
    rng = np.random.default_rng(3)
    root = str(tmp_path / dataset)
    if dataset == "cityscapes":
        tree = fx.make_cityscapes(root, rng, counts={"train": 2})
        stem = tree["train"][1][0]
        bad = os.path.join(root, "leftImg8bit", "train", stem.split("_")[0],
                           stem + "_leftImg8bit.png")
        split = "train"
    elif dataset == "voc":
        names, _, _, _ = fx.make_voc(root, str(tmp_path / "sbd"), rng)
        bad = os.path.join(root, "JPEGImages", names["d"] + ".jpg")
        split = "val"
    else:
        tree = fx.make_kitti_road(root, rng, n=2)
        bad = os.path.join(root, "training", "image_2", sorted(tree)[1] + ".png")
        split = "train"
    _corrupt(bad)
    prefix = _existing_rec(tmp_path)
    line = _one_error_line(*_run(capsys, ["data", dataset, "--root", root, "--split", split,
                                          "--out", prefix, "--no-progress"]))
    assert bad in line and "--skip-bad" in line and "nothing was written" in line, line
    _intact(prefix)


def test_tool_script_missing_root(tmp_path):
    root = str(tmp_path / "nonexistent")
    res = subprocess.run([sys.executable, "tools/cityscapes_to_rec.py", "--root", root,
                          "--split", "train", "--out", str(tmp_path / "x" / "train")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and root in lines[0], res.stderr
    assert not os.path.exists(str(tmp_path / "x"))


# ------------------------------------------------------------------------ OS errors as sentences
def test_describe_os_error_with_real_errors(tmp_path):
    from duc_hdc.cli.main import describe_os_error

    afile = tmp_path / "afile"
    afile.write_text("x")
    adir = tmp_path / "adir"
    adir.mkdir()
    cases = []
    for action in (lambda: open(str(adir)),
                   lambda: os.makedirs(str(afile)),
                   lambda: os.makedirs(str(afile / "sub")),
                   lambda: open(str(tmp_path / "missing" / "f.txt")),
                   lambda: os.replace(str(afile), str(adir))):
        with pytest.raises(OSError) as info:
            action()
        cases.append(info.value)
    texts = [describe_os_error(e) for e in cases]
    for e, text in zip(cases, texts):
        assert "[Errno" not in text and "\n" not in text, text
        assert str(e.filename) in text or str(e.filename2) in text, text
    assert texts[0] == "%s is a directory; a file was expected here" % adir
    assert texts[1].startswith("%s already exists and is a file" % afile)
    assert texts[2].startswith("%s is a file, not a folder" % afile)
    assert "%s does not exist" % (tmp_path / "missing") in texts[3]
    assert texts[4].startswith("%s is a directory" % adir)
    assert errno.EISDIR == cases[4].errno
    if os.path.isdir("/proc/self"):  # Linux: /proc takes no new entries
        with pytest.raises(OSError) as info:
            os.makedirs("/proc/nope")
        assert describe_os_error(info.value) == \
            "/proc/nope does not exist or cannot be created in /proc"


def test_cli_os_errors_are_sentences(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    adir = tmp_path / "somedir"
    adir.mkdir()
    line = _one_error_line(*_run(capsys, ["train", "--config", str(adir)]))
    assert line.startswith("error: %s is a directory; --config takes a recipe name (" % adir)
    assert line.endswith(") or a YAML file"), line
    line = _one_error_line(*_run(capsys, ["data", "synthetic", "--out", str(afile), "--train",
                                          "1", "--val", "0", "--size", "64,128",
                                          "--workers", "1", "--no-progress"]))
    assert str(afile) in line and "is a file" in line, line
    line = _one_error_line(*_run(capsys, ["download", "resnet50_v1s", "--root", str(afile)]))
    assert str(afile) in line and "is a file" in line, line


def test_data_corrupt_image_with_worker_processes(capsys, tmp_path):
    """The error travels back from a worker process (it pickles) and still names the file."""
    root = str(tmp_path / "cs")
    tree = fx.make_cityscapes(root, np.random.default_rng(5), counts={"train": 3})
    stem = tree["train"][1][0]
    bad = os.path.join(root, "leftImg8bit", "train", stem.split("_")[0], stem + "_leftImg8bit.png")
    _corrupt(bad)
    prefix = _existing_rec(tmp_path)
    line = _one_error_line(*_run(capsys, ["data", "cityscapes", "--root", root, "--split",
                                          "train", "--out", prefix, "--workers", "2",
                                          "--no-progress"]))
    assert bad in line and "--skip-bad" in line, line
    _intact(prefix)
    rc = cli.main(["data", "cityscapes", "--root", root, "--split", "train", "--out",
                   str(tmp_path / "skipped"), "--workers", "2", "--skip-bad", "--no-progress"])
    assert rc == 0
    assert bad in capsys.readouterr().out


def test_an_os_error_names_the_option_closest_to_its_path():
    """An option given / contains every path: the option whose value is closest wins, not the
    first in alphabetical order."""
    import argparse
    import importlib

    cli_main = importlib.import_module("duc_hdc.cli.main")  # the module (cli.main is main())

    parser = cli_main.build_parser()
    # "/" given to an option that sorts before --out
    args = argparse.Namespace(calib_rec="/", out="/tmp/x", config="/etc")
    err = FileNotFoundError(2, "No such file or directory", "/tmp/x/leftImg8bit")
    assert cli_main._option_of(parser, args, err) == "--out"
    err = FileNotFoundError(2, "No such file or directory", "/tmp/x")
    assert cli_main._option_of(parser, args, err) == "--out"
    err = FileNotFoundError(2, "No such file or directory", "/srv/data")
    assert cli_main._option_of(parser, args, err) == "--calib-rec"
