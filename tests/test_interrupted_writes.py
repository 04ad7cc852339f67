"""Interrupted and failed writes: a kill, a Ctrl-C or a full disk never leaves an artifact whose
files disagree, never a half-written file that later loads, and the user reads one line naming
the file.

Interruptions are deterministic: a write step is patched to raise KeyboardInterrupt (what
Ctrl-C raises; a SIGKILL at the same point leaves the same files, minus the clean-up). A full
disk is a file-size limit (RLIMIT_FSIZE) in a child process: the real MXNet, OpenCV and Python
writers fail as they do on a full device, without needing root to mount a small file system.
"""
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc import get_model
from duc_hdc.inference import export as export_mod
from duc_hdc.inference.export import export_model
from duc_hdc.models.sidecar import write_sidecar

import data_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (1, 3, 32, 48)


def _net(seed):
    """A tiny network whose outputs depend on ``seed`` (every array drawn from it)."""
    net = get_model("duc_hdc_resnet18", classes=3, base_width=4, cell_width=4)
    rng = np.random.RandomState(seed)
    for name, param in net.collect_params().items():
        low = 0.5 if name.endswith("running_var") else -0.3
        param.set_data(mx.nd.array(rng.uniform(low, low + 0.6, param.shape)))
    return net


def _x():
    return mx.nd.array(np.random.RandomState(7).normal(0, 1, SHAPE).astype(np.float32))


def _onnx_out(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: _x().asnumpy()})[0]


class Interrupt:
    """Raise KeyboardInterrupt at the ``n``-th call of ``module.name`` (calls go through)."""

    def __init__(self, monkeypatch, module, name, n=1):
        self.calls, original = 0, getattr(module, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            if self.calls == n:
                raise KeyboardInterrupt("test: interrupted at %s #%d" % (name, n))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)


# ------------------------------------------------------------------ export over an export
def test_ctrl_c_during_onnx_conversion_leaves_no_onnx_of_the_previous_export(tmp_path,
                                                                           monkeypatch):
    old, new = _net(1), _net(2)
    prefix = str(tmp_path / "deploy")
    export_model(old, prefix, SHAPE, onnx=True, check=False, weights="old.params")
    np.testing.assert_allclose(_onnx_out(prefix + ".onnx"), old(_x()).asnumpy(), rtol=1e-3,
                               atol=1e-5)
    Interrupt(monkeypatch, export_mod, "export_onnx")
    with pytest.raises(KeyboardInterrupt):
        export_model(new, prefix, SHAPE, onnx=True, check=False, weights="new.params")
    with open(prefix + ".json") as f:
        assert json.load(f)["weights"] == "new.params"
    # the previous export's ONNX file would be taken for this one: it must be gone
    assert not os.path.exists(prefix + ".onnx")
    assert not [n for n in os.listdir(str(tmp_path)) if "tmp" in n]


def test_a_new_export_without_onnx_removes_the_previous_exports_onnx(tmp_path, caplog):
    prefix = str(tmp_path / "deploy")
    export_model(_net(1), prefix, SHAPE, onnx=True, check=False, weights="old.params")
    export_model(_net(2), prefix, SHAPE, onnx=False, check=False, weights="new.params")
    assert not os.path.exists(prefix + ".onnx")
    assert "deploy.onnx" in caplog.text  # said so


@pytest.mark.parametrize("step, n", [("replace", 1), ("replace", 2), ("write_sidecar", 1)])
def test_export_interrupted_while_publishing_never_pairs_new_weights_with_old_settings(
        tmp_path, monkeypatch, step, n):
    old, new = _net(1), _net(2)
    prefix = str(tmp_path / "deploy")
    export_model(old, prefix, SHAPE, check=False, weights="old.params")
    if step == "replace":
        Interrupt(monkeypatch, export_mod.os, "replace", n)
    else:
        Interrupt(monkeypatch, export_mod, step, n)
    with pytest.raises(KeyboardInterrupt):
        export_model(new, prefix, SHAPE, check=False, weights="new.params")
    monkeypatch.undo()
    _loads_what_its_sidecar_names(prefix, {"old.params": old, "new.params": new}, _x(),
                                  atol=1e-6)


def _loads_what_its_sidecar_names(prefix, nets, x, atol):
    """What the one loader gives at ``prefix`` is the network its sidecar names (``nets``:
    the sidecar's ``weights`` -> network), or nothing (a refusal is fine: never a mix)."""
    try:
        loaded = duc_hdc.load(prefix)
    except (OSError, ValueError):
        return
    with open(prefix + ".json") as f:
        named = nets[json.load(f)["weights"]]
    np.testing.assert_allclose(loaded(x).asnumpy(), named(x).asnumpy(), rtol=1e-4, atol=atol)


@pytest.mark.parametrize("step", ["replace", "write_sidecar"])
def test_int8_model_interrupted_while_publishing_never_keeps_the_old_sidecar(
        tmp_path, monkeypatch, step):
    from duc_hdc.inference import int8
    from duc_hdc.inference.graphs import calibration_batch, quantize_net, save_quantized

    images = [np.random.RandomState(s).randint(0, 256, (32, 48, 3)).astype(np.uint8)
              for s in (1, 2)]
    old, new = _net(1), _net(2)
    q_old = quantize_net(old, calibration_batch(images, old.normalization))
    q_new = quantize_net(new, calibration_batch(images, new.normalization))
    prefix = str(tmp_path / "int8")
    save_quantized(q_old, prefix, weights="old")
    if step == "replace":  # the params renamed, not yet the symbol
        Interrupt(monkeypatch, int8.os if hasattr(int8, "os") else os, "replace", 2)
    else:
        Interrupt(monkeypatch, int8, step)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(q_new, prefix, weights="new")
    monkeypatch.undo()
    x = calibration_batch(images[:1], old.normalization)
    _loads_what_its_sidecar_names(prefix, {"old": q_old, "new": q_new}, mx.nd.array(x),
                                  atol=1e-5)


# ------------------------------------------------------------------ evaluate --out DIR again
def test_evaluation_interrupted_in_a_used_folder_leaves_no_metrics_of_the_earlier_one(
        tiny_recs, tmp_path, monkeypatch):
    from duc_hdc.evaluation import evaluate as evaluate_mod
    from duc_hdc.evaluation.evaluate import run_evaluation
    from duc_hdc.inference.segmenter import Segmenter

    out = str(tmp_path / "val")
    net = get_model("duc_hdc_resnet18", classes=19, base_width=4, cell_width=4)
    run_evaluation(rec=tiny_recs["val"], save_dir=out, progress=False, model="first",
                   segmenter=Segmenter(net))
    assert os.path.isfile(os.path.join(out, "metrics.json"))
    Interrupt(monkeypatch, evaluate_mod, "save_prediction", 2)  # the second image
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(rec=tiny_recs["val"], save_dir=out, progress=False, model="second",
                       segmenter=Segmenter(net))
    # the folder now holds this run's first prediction beside the earlier run's second: no
    # metrics.json may present it as one complete evaluation
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    assert not [n for _, _, files in os.walk(out) for n in files if "tmp" in n]


def test_a_prediction_image_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from duc_hdc.evaluation.evaluate import save_prediction

    pred = np.random.RandomState(0).randint(0, 19, (16, 24)).astype(np.uint8)
    Interrupt(monkeypatch, os, "replace")  # stopped before its file is complete
    with pytest.raises(KeyboardInterrupt):
        save_prediction(str(tmp_path), "ulm_000001_000019", pred, "cityscapes")
    assert [n for _, _, files in os.walk(str(tmp_path)) for n in files if not n.startswith(".")] \
        == []


def test_synthetic_data_killed_mid_image_leaves_no_partial_png(tmp_path, monkeypatch):
    from duc_hdc.demo.synthetic import make_synthetic_cityscapes

    Interrupt(monkeypatch, os, "replace", 6)  # the second scene's image, before it is whole
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_cityscapes(str(tmp_path), num_train=2, num_val=0, size=(32, 64),
                                  progress=False, workers=1)
    monkeypatch.undo()
    pngs = sorted(n for _, _, files in os.walk(str(tmp_path)) for n in files
                  if not n.startswith("."))
    # the first scene whole; of the second, the labels (written first) but no image
    assert pngs == ["synthtown_000000_000019_gtFine_instanceIds.png",
                    "synthtown_000000_000019_gtFine_labelIds.png",
                    "synthtown_000000_000019_leftImg8bit.png",
                    "synthville_000001_000019_gtFine_instanceIds.png",
                    "synthville_000001_000019_gtFine_labelIds.png"], pngs


def test_a_config_write_that_fails_leaves_nothing_beside_it(tmp_path, monkeypatch):
    import errno

    from duc_hdc import config

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(config.yaml, "safe_dump", full)
    with pytest.raises(OSError) as excinfo:
        config.save_config({"train": {"lr": 0.1}}, str(tmp_path / "config.yaml"))
    assert excinfo.value.filename == str(tmp_path / "config.yaml")
    assert os.listdir(str(tmp_path)) == []


# --------------------------------------------------------------------------- a full disk
def _run_limited(args, limit, cwd):
    """``duc-hdc ARGS`` in a child whose files may not grow beyond ``limit`` bytes (the
    writers fail as on a full disk); (returncode, stderr)."""
    code = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (%d, resource.RLIM_INFINITY))
        from duc_hdc.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """) % limit
    proc = subprocess.run([sys.executable, "-c", code] + list(args), cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    return proc.returncode, proc.stderr


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err and "MXNetError" not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    net = _net(3)
    path = str(root / "w.params")
    net.save_parameters(path)
    write_sidecar(path, net.config)
    return path


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(weights, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run_limited(["export", "--params", weights, "--shape", "1,3,32,48", "--out",
                            str(out / "m")], 40000, str(tmp_path))
    assert rc == 2
    line = _one_error_line(err)
    assert str(out / "m") in line
    assert os.listdir(str(out)) == []


def test_conversion_on_a_full_disk_is_one_line_naming_the_file(tmp_path):
    root = str(tmp_path / "cs")
    fx.make_cityscapes(root, np.random.default_rng(0))
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run_limited(["data", "cityscapes", "--root", root, "--split", "train", "--out",
                            str(out / "train"), "--no-progress"], 20000, str(tmp_path))
    assert rc == 2
    line = _one_error_line(err)
    assert str(out / "train") in line
    assert os.listdir(str(out)) == []


def test_predict_on_a_full_disk_names_the_file(weights, tmp_path):
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    fx.write_png(str(img), np.random.RandomState(0).randint(0, 256, (96, 128, 3), np.uint8))
    out = tmp_path / "out"
    rc, err = _run_limited(["predict", "--params", weights, str(img), "--out", str(out),
                            "--no-progress"], 3000, str(tmp_path))
    assert rc == 2
    line = _one_error_line(err)
    assert str(out) in line and ".png" in line
    assert not [n for _, _, files in os.walk(str(out)) for n in files if "tmp" in n]


def test_atomic_path_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path,
                                                                          monkeypatch):
    """MXNet's writers (checkpoints, params) write by file name and do not sync: after a power
    loss the renamed file could be empty. atomic_path syncs what was written, then renames,
    then syncs the folder that holds the rename."""
    from duc_hdc import fileio

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "w.params"
    with fileio.atomic_path(str(target)) as tmp:
        with open(tmp, "wb") as f:  # as mx.nd.save writes: no sync of its own
            f.write(b"weights")
    assert target.read_bytes() == b"weights"
    assert events == [("fsync", tmp), ("replace", tmp), ("fsync", str(tmp_path))], events


def test_two_threads_writing_one_path_use_their_own_temporary_files(tmp_path):
    """The temporary name was the process id only: two threads writing one path (two
    predictions landing on one output, a report rebuilt while another renders) wrote into one
    temporary file, and the second rename failed or renamed a mix."""
    import threading

    from duc_hdc import fileio

    target = str(tmp_path / "out.png")
    both = threading.Barrier(2, timeout=30)
    seen, errors = {}, []

    def write(tag):
        try:
            with fileio.atomic_path(target) as tmp:
                seen[tag] = tmp
                with open(tmp, "wb") as f:
                    f.write(tag.encode() * 1000)
                both.wait()  # both temporary files written before either is renamed
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen["a"] != seen["b"]
    assert open(target, "rb").read() in (b"a" * 1000, b"b" * 1000)
