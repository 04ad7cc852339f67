"""Training: multi-device replicas, exact resume, schedules, config errors, non-finite loss."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from duc_hdc.config import ConfigError, apply_overrides, load_config, validate
from duc_hdc.data.datasets import convert_cityscapes
from duc_hdc.demo.synthetic import make_synthetic_cityscapes
import duc_hdc
from duc_hdc import train
from duc_hdc.training.trainer import (Checkpointer, SegmentationLoss, TrainingError, learning_rate,
                                      params_checksum)


@pytest.fixture(scope="module")
def tiny_recs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_cityscapes(str(root / "cityscapes"), num_train=8, num_val=2, size=(64, 128),
                              seed=1, progress=False)
    recs = {}
    for split in ("train", "val"):
        convert_cityscapes(str(root / "cityscapes"), split, str(root / split), progress=False)
        recs[split] = str(root / split) + ".rec"
    return recs


def tiny_config(recs, out_dir, *extra):
    overrides = [
        "data.train_rec=%s" % recs["train"], "data.val_rec=%s" % recs["val"],
        "train.out_dir=%s" % out_dir, "data.crop_size=[48,96]", "data.scales=[1.0]",
        "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1,2]",
        "train.batch_size_per_device=2", "train.epochs=1", "train.optimizer=sgd",
        "train.lr=0.01", "train.warmup_iters=0", "train.lr_schedule=constant",
        "train.checkpoint_every_iters=1", "train.log_every_iters=1",
        "train.val_every_epochs=1",
    ]
    return load_config("synthetic", overrides + list(extra))


def test_two_devices_keep_identical_replicas(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.kvstore=device",
                      "train.max_iters=2", "data.val_rec=null")
    summary = train(cfg, ctx=[mx.cpu(0), mx.cpu(1)], progress=False)
    assert summary["iterations"] == 2
    net = duc_hdc.load(summary["final"])
    assert params_checksum(net) == summary["checksum"]
    # the saved parameters moved away from the initialization and are finite
    rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_replicas_identical_on_both_contexts(tiny_recs, tmp_path):
    from duc_hdc.training import trainer as train_mod

    captured = {}
    original = train_mod.params_checksum

    def capture(net):
        for name, p in net._collect_params_with_prefix().items():
            if p.grad_req == "null":  # BatchNorm statistics are per device
                continue
            a, b = (p.data(c).asnumpy() for c in p.list_ctx())
            captured[name] = float(np.abs(a - b).max())
        return original(net)

    train_mod.params_checksum = capture
    try:
        cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.kvstore=device",
                          "train.max_iters=3", "data.val_rec=null")
        train(cfg, ctx=[mx.cpu(0), mx.cpu(1)], progress=False)
    finally:
        train_mod.params_checksum = original
    assert captured and max(captured.values()) == 0.0


def test_resume_continues_exactly(tiny_recs, tmp_path):
    """4 iterations straight == 2 iterations, stop, resume, 2 more (momentum, data, schedule)."""
    common = ("train.lr_schedule=poly", "train.optimizer=sgd", "data.val_rec=null",
              "data.scales=[0.75,1.0,1.25]", "model.bn_frozen=false")
    straight = train(tiny_config(tiny_recs, str(tmp_path / "a"), "train.max_iters=4", *common),
                     progress=False)
    train(tiny_config(tiny_recs, str(tmp_path / "b"), "train.max_iters=2", *common),
          progress=False)
    resumed = train(tiny_config(tiny_recs, str(tmp_path / "b"), "train.max_iters=4", *common),
                    resume=str(tmp_path / "b"), progress=False)
    assert resumed["iterations"] == 4
    a = duc_hdc.load(straight["final"])._collect_params_with_prefix()
    b = duc_hdc.load(resumed["final"])._collect_params_with_prefix()
    for name in a:
        np.testing.assert_allclose(b[name].data().asnumpy(), a[name].data().asnumpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    # a different data order would not match: a fresh run with another seed differs
    other = train(tiny_config(tiny_recs, str(tmp_path / "c"), "train.max_iters=4",
                              "train.seed=7", *common), progress=False)
    assert other["checksum"] != straight["checksum"]


def test_validation_keeps_best_and_writes_curves(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.epochs=2")
    summary = train(cfg, progress=False)
    assert len(summary["history"]) == 2
    assert all(0.0 <= h["mean_iou"] <= 1.0 for h in summary["history"])
    best = max(h["mean_iou"] for h in summary["history"])
    assert summary["best"]["mean_iou"] == best
    assert os.path.exists(tmp_path / "run" / "best.params")
    assert os.path.getsize(tmp_path / "run" / "curves.png") > 1000
    with open(tmp_path / "run" / "config.yaml") as f:
        assert "train_rec" in f.read()
    # keep_last=2 checkpoints, the newest named by latest.json
    ckpts = sorted(f for f in os.listdir(tmp_path / "run" / "checkpoints")
                   if f.endswith(".params"))
    assert len(ckpts) == 2
    assert Checkpointer(str(tmp_path / "run")).latest().endswith(ckpts[-1][:-7])


def test_non_finite_loss_stops_with_a_clear_message(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.lr=1.0e+30",
                      "train.clip_gradient=null", "data.val_rec=null")
    with pytest.raises(TrainingError, match="non-finite loss") as err:
        train(cfg, progress=False)
    assert not os.path.exists(tmp_path / "run" / "final.params")
    # the message names the last good checkpoint, which exists and is the one resumed
    stem = str(err.value).split("last good checkpoint is ")[1].split(";")[0]
    assert os.path.exists(stem + ".params")
    assert Checkpointer(str(tmp_path / "run")).latest() == stem


def test_resume_without_checkpoint_is_an_error(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"))
    with pytest.raises(TrainingError, match="no checkpoint found"):
        train(cfg, resume=str(tmp_path / "empty"), progress=False)


def test_loss_ignores_label_255_and_averages_valid_pixels():
    pred = mx.nd.array(np.log(np.array([[[[0.5, 0.25]], [[0.5, 0.75]]]], np.float32)))
    label = mx.nd.array([[[1, 255]]])
    loss = SegmentationLoss()(pred, label).asscalar()
    assert loss == pytest.approx(-np.log(0.5))  # only the first pixel counts
    label = mx.nd.array([[[255, 255]]])
    assert SegmentationLoss()(pred, label).asscalar() == 0.0


def test_learning_rate_schedules():
    cfg = dict(lr=1e-4, warmup_iters=0, lr_schedule="step", lr_factor=0.5, lr_step_epochs=5,
               lr_power=0.9)
    # the release: x0.5 every 5 epochs
    assert learning_rate(0, cfg, 100, 5000) == pytest.approx(1e-4)
    assert learning_rate(499, cfg, 100, 5000) == pytest.approx(1e-4)
    assert learning_rate(500, cfg, 100, 5000) == pytest.approx(5e-5)
    assert learning_rate(1500, cfg, 100, 5000) == pytest.approx(1.25e-5)
    cfg.update(lr_schedule="poly", warmup_iters=10)
    assert learning_rate(4, cfg, 100, 110) == pytest.approx(1e-4 * 5 / 10)
    assert learning_rate(60, cfg, 100, 110) == pytest.approx(1e-4 * 0.5 ** 0.9)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'lrr' at train; valid: .*lr,"):
        load_config("synthetic", ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"train.epochs: expected int, got 'ten'"):
        load_config("synthetic", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="train.kvstore: 'nccl' is not one of"):
        load_config("synthetic", ["train.kvstore=nccl"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("synthetic", ["train.lr"])
    with pytest.raises(ConfigError, match="data.crop_size: two multiples of 8"):
        load_config("synthetic", ["data.crop_size=[100,100]"])
    with pytest.raises(ConfigError, match="model.name: 'resnet' is not a model"):
        load_config("synthetic", ["model.name=resnet"])
    with pytest.raises(ConfigError, match="neither a YAML file nor a packaged recipe; recipes: "
                                          ".*cityscapes"):
        load_config("citiscapes")
    cfg = load_config("cityscapes")
    del cfg["train"]["seed"]
    with pytest.raises(ConfigError, match="missing key train.seed"):
        validate(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))


def test_every_packaged_recipe_validates_and_builds_its_model():
    from duc_hdc.config import available_configs, model_overrides
    from duc_hdc.models.network import resolve_settings

    names = available_configs()
    assert {"cityscapes", "cityscapes_coarse", "voc", "kitti_road", "synthetic"} <= set(names)
    for name in names:
        cfg = load_config(name)
        settings = resolve_settings(cfg["model"]["name"], **model_overrides(cfg))
        assert settings["classes"] == cfg["model"]["classes"]
    release = load_config("cityscapes")
    assert release["train"]["lr"] == 1e-4 and release["train"]["wd"] == 5e-5
    assert release["data"]["crop_size"] == [800, 800] and release["data"]["anchor_jitter"] == 120
    assert apply_overrides(release, ["train.lr=2e-4"])["train"]["lr"] == 2e-4


def test_sigkill_loses_at_most_one_checkpoint_interval(tiny_recs, tmp_path):
    """A run killed with SIGKILL resumes from its last checkpoint through the CLI."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--config", "synthetic",
               "--no-progress"]
    sets = ["data.train_rec=%s" % tiny_recs["train"], "data.val_rec=null",
            "train.out_dir=%s" % run, "data.crop_size=[48,96]", "data.scales=[1.0]",
            "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1]",
            "train.batch_size_per_device=2", "train.epochs=50", "train.checkpoint_every_iters=2"]
    for kv in sets:
        command += ["--set", kv]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and json.load(open(pointer))["checkpoint"].endswith("00000004"):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stem = Checkpointer(str(run)).latest()
    done = json.load(open(stem + ".json"))["iteration"]
    assert done >= 4
    resumed = subprocess.run(command + ["--resume", str(run), "--set", "train.max_iters=%d"
                                        % (done + 2)], capture_output=True, text=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "iteration %d" % done in resumed.stderr
    assert "trained %d iterations" % (done + 2) in resumed.stdout
