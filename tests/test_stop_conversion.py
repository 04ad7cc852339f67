"""Ctrl-C (to the whole process group, as a terminal sends it) and SIGTERM (as `timeout` and
batch schedulers send it) during a conversion with worker processes: a prompt exit with one
line and the signal's status, no traceback from any process, no .part file, no worker left."""
import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = r"""
import sys, time
from duc_hdc.data import convert
convert_one = convert._convert_one
def slow(args):  # every image takes a while: the signal lands mid-conversion
    time.sleep(0.3)
    return convert_one(args)
convert._convert_one = slow
from duc_hdc import cli
sys.exit(cli.main(["data", "cityscapes", "--root", sys.argv[1], "--split", "train", "--out",
                   sys.argv[2], "--workers", "2", "--no-progress"]))
"""


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from duc_hdc.demo.synthetic import make_synthetic_cityscapes

    root = tmp_path_factory.mktemp("stopconv") / "cityscapes"
    make_synthetic_cityscapes(str(root), num_train=40, num_val=1, size=(32, 64), seed=2,
                              progress=False)
    return str(root)


def _gone(pgid, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_conversion_exits_cleanly(city, tmp_path, how):
    out = str(tmp_path / "train")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, city, out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(out + ".rec.part"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    signum = signal.SIGINT if how == "ctrl-c" else signal.SIGTERM
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Error" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted: nothing was written", err
    assert sorted(os.listdir(str(tmp_path))) == []
    assert _gone(proc.pid), "a worker process outlived the conversion"
