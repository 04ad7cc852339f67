"""dist_sync on 127.0.0.1: 2 workers + 1 server give identical parameters; a dying worker
stops the whole job. Every job is bounded by a timeout."""
import re
import sys
import time

import pytest

from duc_hdc.training.distributed import launch, read_hostfile
from test_train import tiny_recs  # noqa: F401  (module fixture: tiny synthetic RecordIO)


def test_dist_sync_two_workers_identical_checksums(tiny_recs, tmp_path, capfd):  # noqa: F811
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--config", "synthetic",
               "--no-progress", "--kvstore", "dist_sync"]
    for kv in ["data.train_rec=%s" % tiny_recs["train"], "data.val_rec=null",
               "train.out_dir=%s" % (tmp_path / "run"), "data.crop_size=[48,96]",
               "data.scales=[1.0]", "data.num_workers=0", "model.base_width=4",
               "model.aspp_rates=[1,2]", "train.batch_size_per_device=2", "train.epochs=2",
               "train.optimizer=sgd", "train.lr=0.01", "train.checkpoint_every_iters=2"]:
        command += ["--set", kv]
    rc = launch(command, num_workers=2, num_servers=1, timeout=240)
    out = capfd.readouterr()
    text = out.out + out.err
    assert rc == 0, text[-3000:]
    sums = re.findall(r"params checksum: ([0-9a-f]{64})", text)
    assert len(sums) == 2, text[-3000:]
    assert sums[0] == sums[1]
    # each worker ran its own shard: 8 images / 2 workers / batch 2 = 2 iterations per epoch
    assert "4 iterations (2 per epoch), batch 2 per worker, 2 worker(s)" in text


def test_a_dying_worker_stops_the_job(tmp_path):
    script = (
        "import os, mxnet as mx\n"
        "kv = mx.kv.create('dist_sync')\n"
        "if kv.rank == 1:\n"
        "    os._exit(3)\n"
        "kv.init(0, mx.nd.zeros((4,)))\n"
        "kv.push(0, mx.nd.ones((4,)))\n"  # waits forever for the dead worker's push
        "out = mx.nd.zeros((4,))\n"
        "kv.pull(0, out=out)\n"
        "out.wait_to_read()\n"
    )
    start = time.time()
    rc = launch([sys.executable, "-c", script], num_workers=2, num_servers=1, timeout=120,
                grace=2.0)
    assert rc == 3
    assert time.time() - start < 60


def test_launch_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="no worker command"):
        launch([], num_workers=2)
    with pytest.raises(ValueError, match="at least one worker"):
        launch(["true"], num_workers=0)
    empty = tmp_path / "hosts"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="lists no hosts"):
        read_hostfile(str(empty))


@pytest.mark.parametrize("other_worker_differs", [False, True])
def test_start_check_compares_the_workers_checksums(other_worker_differs):
    """_synchronize_start sums every worker's checksum bytes through the kvstore: a worker
    whose parameters differ makes the sum differ from num_workers x its own."""
    import mxnet as mx
    from mxnet import gluon

    from duc_hdc import get_model
    from duc_hdc.training.trainer import TrainingError, _synchronize_start

    class TwoWorkers(object):  # a kvstore whose other worker pushes the same or other bytes
        def __init__(self):
            self.pulled = []

        def _barrier(self):
            pass

        def init(self, key, value):
            pass

        def pull(self, key, out, priority=0):
            self.pulled.append(key)

        def pushpull(self, key, value, out):
            out[:] = value * 2 + (1 if other_worker_differs else 0)

    net = get_model("duc_hdc_resnet18", classes=3, base_width=4)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, kvstore=None)
    kv = TwoWorkers()
    if other_worker_differs:
        with pytest.raises(TrainingError, match="2 workers hold different parameters"):
            _synchronize_start(net, trainer, kv, 2)
    else:
        _synchronize_start(net, trainer, kv, 2)
    assert kv.pulled == list(range(len(trainer._params)))  # every parameter pulled again
    mx.nd.waitall()
