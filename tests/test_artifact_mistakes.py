"""A new user's mistakes with the project's own artifacts: each gets one line naming the file and
what would be right, and no write replaces what another artifact needs."""
import os
import shutil
import signal

import cv2
import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc import cli, runtime
from duc_hdc.config import ConfigError, load_config, model_overrides
from duc_hdc.fileio import write_errors_named
from duc_hdc.hub import zoo
from duc_hdc.inference.export import BF16_EXPORT_KIND
from duc_hdc.inference.graphs import calibration_batch, quantize_net, save_quantized
from duc_hdc.models.sidecar import write_sidecar

from test_compiled_artifacts import _one_line_error as _one_line, _rgb

TINY = dict(classes=5, base_width=8)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """A tiny network's run folder (final.params + final.json), its export and INT8 prefixes."""
    root = tmp_path_factory.mktemp("artifacts")
    mx.random.seed(4)
    net = duc_hdc.get_model("duc_hdc_resnet18", **TINY)
    run = root / "run"
    run.mkdir()
    params = str(run / "final.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    int8 = str(root / "int8" / "tiny")
    save_quantized(quantize_net(net, calibration_batch([_rgb(1)], net.normalization)), int8)
    export = str(root / "export" / "tiny")
    assert cli.main(["export", "--model", params, "--shape", "1,3,32,64", "--out", export,
                     "--no-check"]) == 0
    image = str(root / "street.png")
    cv2.imwrite(image, _rgb(5))
    return dict(root=root, net=net, params=params, int8=int8, export=export, image=image)


def _copy_prefix(prefix, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    for suffix in ("-symbol.json", "-0000.params", ".json"):
        shutil.copyfile(prefix + suffix, dst + suffix)
    return dst


def _one_line_error(capsys, *words):
    err = _one_line(capsys)
    for word in words:
        assert word in err, (word, err)
    return err


def _predict(art, model, tmp_path, *extra):
    return cli.main(["predict", "--model", model, art["image"], "--out", str(tmp_path / "o"),
                     "--no-progress"] + list(extra))


# ------------------------------------------------------------------------------ damaged files
def test_a_truncated_int8_model_is_named_in_one_line(art, tmp_path, capsys):
    prefix = _copy_prefix(art["int8"], str(tmp_path / "q" / "tiny"))
    data = open(prefix + "-0000.params", "rb").read()
    open(prefix + "-0000.params", "wb").write(data[:len(data) // 2])
    assert _predict(art, prefix, tmp_path) == 2
    _one_line_error(capsys, prefix + "-0000.params", "truncated")


@pytest.mark.parametrize("which", ["int8", "export"])
def test_a_damaged_symbol_file_is_named_in_one_line(art, tmp_path, capsys, which):
    prefix = _copy_prefix(art[which], str(tmp_path / which / "tiny"))
    for content in (b"{", b"\xff\xfe not json"):
        open(prefix + "-symbol.json", "wb").write(content)
        assert _predict(art, prefix, tmp_path) == 2
        _one_line_error(capsys, prefix + "-symbol.json", "export it again")


def test_an_export_prefix_without_its_graph_names_the_missing_file(art, tmp_path, capsys):
    prefix = _copy_prefix(art["export"], str(tmp_path / "e" / "tiny"))
    os.remove(prefix + "-symbol.json")
    assert _predict(art, prefix, tmp_path) == 2
    _one_line_error(capsys, prefix + "-symbol.json", "missing")


def _fake_bf16_export(art, prefix):
    """A bf16 export's files as the loader first sees them (its sidecar's kind): enough to be
    refused on a CPU without bfloat16, on any CPU (the files are never run)."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    shutil.copyfile(art["export"] + "-symbol.json", prefix + "-symbol.json")
    shutil.copyfile(art["export"] + "-0000.params", prefix + "-0000.params")
    write_sidecar(prefix + "-0000.params", art["net"].config, path=prefix + ".json",
                  kind=BF16_EXPORT_KIND)
    return prefix


def test_a_bf16_export_on_a_cpu_without_bfloat16_is_refused_in_one_line(art, tmp_path, capsys,
                                                                         monkeypatch):
    prefix = _fake_bf16_export(art, str(tmp_path / "bf" / "tiny"))
    monkeypatch.setattr(runtime, "bf16_support", lambda *a, **k: None)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})
    for command in (["predict", "--model", prefix, art["image"], "--out", str(tmp_path / "o")],
                    ["benchmark", "--model", prefix, "--shape", "1,3,32,64", "--iters", "1"]):
        assert cli.main(command) == 2
        _one_line_error(capsys, prefix, "bf16 export", "AVX512_BF16", "--precision fp32")


# ------------------------------------------------------------------------------ wrong file given
def test_a_settings_file_given_as_the_model_points_at_its_weights(art, tmp_path, capsys):
    side = art["params"][:-len(".params")] + ".json"
    assert _predict(art, side, tmp_path) == 2
    _one_line_error(capsys, "settings file of %s" % art["params"], "--model %s" % art["params"])
    assert _predict(art, art["export"] + ".json", tmp_path) == 2
    _one_line_error(capsys, "--model %s" % art["export"])


def test_other_files_given_as_the_model_say_what_they_are(art, tmp_path, capsys):
    onnx = art["export"] + ".onnx"
    open(onnx, "wb").write(b"not read")
    try:
        assert _predict(art, onnx, tmp_path) == 2
        _one_line_error(capsys, onnx, "ONNX", "--model %s" % art["export"])
    finally:
        os.remove(onnx)
    stray = str(tmp_path / "model.onnx")
    open(stray, "wb").write(b"x")
    assert _predict(art, stray, tmp_path) == 2
    _one_line_error(capsys, stray, "ONNX Runtime")
    recipe = str(tmp_path / "recipe.yaml")
    open(recipe, "w").write("model: {name: duc_hdc_resnet18}\n")
    assert _predict(art, recipe, tmp_path) == 2
    _one_line_error(capsys, recipe, "--config %s --params" % recipe)


def test_a_binary_file_given_as_a_recipe_is_named(art, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(art["image"])
    assert art["image"] in str(e.value) and "YAML" in str(e.value)


def test_the_python_loader_takes_config_and_params_by_keyword(art, tmp_path):
    net = duc_hdc.load(params=art["params"])
    assert net.classes == TINY["classes"]
    cfg = load_config("synthetic")  # the README's example: a recipe and its weights
    weights = str(tmp_path / "synthetic.params")
    duc_hdc.get_model(cfg["model"]["name"], **model_overrides(cfg)).save_parameters(weights)
    net = duc_hdc.load(config="synthetic", params=weights)
    assert net.classes == cfg["model"]["classes"]


# ------------------------------------------------------------------------------ what writes destroy
@pytest.mark.parametrize("out", ["{run}/", "{run}/final", "{run}/final-symbol.json"])
def test_export_into_a_run_folder_never_replaces_the_weights_settings(art, tmp_path, capsys, out):
    run = tmp_path / "run"
    shutil.copytree(os.path.dirname(art["params"]), run)
    params, side = str(run / "final.params"), str(run / "final.json")
    before = open(side).read()
    out = out.format(run=run)
    assert cli.main(["export", "--model", params, "--shape", "1,3,32,64", "--out", out,
                     "--no-check"]) == 2
    _one_line_error(capsys, side, params, "another")
    assert open(side).read() == before
    assert sorted(os.listdir(run)) == ["final.json", "final.params"]
    assert duc_hdc.load(params).classes == TINY["classes"]


def test_quantize_into_a_run_folder_never_replaces_the_weights_settings(art, tiny_recs, tmp_path,
                                                                         capsys):
    run = tmp_path / "run"
    shutil.copytree(os.path.dirname(art["params"]), run)
    side = str(run / "final.json")
    before = open(side).read()
    assert cli.main(["quantize", "--model", str(run / "final.params"), "--calib-rec",
                     tiny_recs["train"], "--num-calib", "1", "--out", str(run) + "/"]) == 2
    _one_line_error(capsys, side)
    assert open(side).read() == before
    assert sorted(os.listdir(run)) == ["final.json", "final.params"]


def test_an_export_that_cannot_be_written_is_one_line(art, capsys):
    # /proc refuses new files: MXNet's own writer fails ("LocalFileSystem ... Open")
    assert cli.main(["export", "--model", art["params"], "--shape", "1,3,32,64", "--out",
                     "/proc/duc_hdc_export_test", "--no-check"]) == 2
    _one_line_error(capsys, "/proc/duc_hdc_export_test-symbol.json")


def test_mxnet_write_failures_become_os_errors_naming_the_file(tmp_path):
    text = ('Traceback (most recent call last):\n  File "../3rdparty/dmlc-core/src/io/'
            'local_filesys.cc", line 209\nLocalFileSystem: Check failed: allow_null: :Open '
            '"%s/.x.tmp1-2-symbol.json": Read-only file system' % tmp_path)
    target = str(tmp_path / "x-symbol.json")
    with pytest.raises(OSError) as e:
        with write_errors_named(target, str(tmp_path / ".x.tmp1-2-symbol.json")):
            raise mx.base.MXNetError(text)
    assert e.value.errno == 30 and e.value.filename == target  # EROFS
    assert "Read-only" in e.value.strerror


# ------------------------------------------------------------------------------ download mirror
@pytest.mark.parametrize("base", ["/srv/mirror", "ftp://mirror.example/duc", "mirror.example"])
def test_a_mirror_that_is_no_url_is_refused_before_any_attempt(tmp_path, monkeypatch, base):
    monkeypatch.setenv("DUC_HDC_HOME", str(tmp_path))
    with pytest.raises(ValueError) as e:
        zoo.get_weights("resnet50_v1s", base_url=base, progress=False)
    assert base in str(e.value) and "file://" in str(e.value)
    monkeypatch.setenv("DUC_HDC_BASE_URL", base)
    with pytest.raises(ValueError) as e:
        zoo.get_weights("resnet50_v1s", progress=False)
    assert "DUC_HDC_BASE_URL" in str(e.value)


# ------------------------------------------------------------------------------ convert
def test_convert_names_what_is_not_a_release_graph(art, tmp_path, capsys,
                                                    reference_symbol_path):
    # the project's own export given to the release converter
    assert cli.main(["convert", "tusimple", "--prefix", art["export"], "--epoch", "0",
                     "--classes", "5", "--out", str(tmp_path / "o") + "/"]) == 2
    _one_line_error(capsys, art["export"] + "-symbol.json", "not a TuSimple-DUC",
                    "--model PREFIX")
    # the graph file given for the prefix: read as its prefix (the weights are missing here)
    prefix = str(tmp_path / "release")
    shutil.copy(reference_symbol_path, prefix + "-symbol.json")
    assert cli.main(["convert", "tusimple", "--prefix", prefix + "-symbol.json", "--epoch", "20",
                     "--classes", "19", "--out", str(tmp_path / "o") + "/"]) == 2
    err = _one_line_error(capsys, prefix + "-0020.params")
    assert "-symbol.json-symbol.json" not in err
    assert cli.main(["convert", "tusimple", "--prefix", prefix, "--epoch", "-1", "--classes",
                     "19", "--out", str(tmp_path / "o") + "/"]) == 2
    _one_line_error(capsys, "--epoch -1")


def test_no_progress_reaches_the_download_of_zoo_weights(art, tmp_path, monkeypatch):
    asked = []

    def weights(*args, **kwargs):
        asked.append(kwargs.get("progress", True))
        raise zoo.WeightsNotAvailableError("stop here")

    monkeypatch.setattr(zoo, "get_weights", weights)
    monkeypatch.setattr(zoo, "weights_for_model", weights)
    for command in (["predict", "--model", "duc_hdc_resnet101_cityscapes_onnx", art["image"],
                     "--out", str(tmp_path / "o"), "--no-progress"],
                    ["export", "--model", "duc_hdc_resnet101_cityscapes_onnx", "--shape",
                     "1,3,32,64", "--out", str(tmp_path / "e"), "--no-progress"]):
        assert cli.main(command) == 2
    assert asked == [False, False]


# ------------------------------------------------------------------------------ small surprises
def test_initialize_on_an_initialized_network_is_one_line_not_a_warning_per_parameter(
        recwarn, caplog):
    net = duc_hdc.get_model("duc_hdc_resnet18", **TINY)
    before = {k: v.data().asnumpy().copy() for k, v in net.collect_params().items()}
    with caplog.at_level("INFO"):
        net.initialize()
    assert not [w for w in recwarn if "already initialized" in str(w.message)]
    assert any("initialized already" in r.getMessage() for r in caplog.records)
    assert all(np.array_equal(before[k], v.data().asnumpy())
               for k, v in net.collect_params().items())
    net.initialize(force_reinit=True)  # still draws new weights when asked
    assert any(not np.array_equal(before[k], v.data().asnumpy())
               for k, v in net.collect_params().items())


def test_a_zero_std_is_refused():
    with pytest.raises(ValueError) as e:
        duc_hdc.get_model("duc_hdc_resnet18", std=(0, 1, 1), **TINY)
    assert "> 0" in str(e.value)


def test_quantize_exclude_empty_and_benchmark_json_folder_are_refused_first(art, tiny_recs,
                                                                            tmp_path, capsys):
    assert cli.main(["quantize", "--model", art["params"], "--calib-rec", tiny_recs["train"],
                     "--exclude", "", "--out", str(tmp_path / "q")]) == 2
    _one_line_error(capsys, "--exclude")
    assert not os.path.exists(tmp_path / "q")
    assert cli.main(["benchmark", "--model", art["params"], "--shape", "1,3,32,64", "--iters",
                     "1", "--json", str(tmp_path)]) == 2
    _one_line_error(capsys, "--json", "is a folder")


def test_predict_names_the_files_it_ignores_in_a_folder(art, tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(art["image"], folder / "a.png")
    (folder / "notes.txt").write_text("x")
    with caplog.at_level("INFO"):
        assert cli.main(["predict", "--model", art["params"], str(folder), "--out",
                         str(tmp_path / "o2"), "--no-progress"]) == 0
    assert any(str(folder / "notes.txt") in r.getMessage() for r in caplog.records)


def test_options_that_would_be_ignored_or_mistyped_are_named(art, tiny_recs, tmp_path, capsys):
    # calibration images for a model quantized already
    assert _predict(art, art["int8"], tmp_path, "--precision", "int8", "--calib-rec",
                    tiny_recs["train"]) == 2
    _one_line_error(capsys, "--calib-rec", "INT8 model")
    # a GPU list that is no list, on a machine without GPUs too
    assert _predict(art, art["params"], tmp_path, "--gpus", "abc") == 2
    _one_line_error(capsys, "--gpus", "'abc'", "0,1,2")
    # a recipe value of the wrong type lists the right ones
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", ["train.amp=1"])
    assert "bfloat16" in str(e.value) and "float16" in str(e.value)


def test_sigterm_during_an_export_leaves_no_temporary_file(art, tmp_path, capsys, monkeypatch):
    from duc_hdc.inference import export as export_mod

    def terminated(prefix):  # called while the new files still have their temporary names
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between these bytecodes
            pass

    monkeypatch.setattr(export_mod, "retire_artifact", terminated)

    def unhandled(signum, frame):  # the default action (death), testably
        raise AssertionError("SIGTERM reached the process's own handler")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        out = tmp_path / "e"
        assert cli.main(["export", "--model", art["params"], "--shape", "1,3,32,64", "--out",
                         str(out / "tiny"), "--no-check"]) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "interrupted" in capsys.readouterr().err
    assert os.listdir(out) == []  # neither the new files nor their temporary names


def test_settings_of_a_newer_version_are_refused(art, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    shutil.copytree(os.path.dirname(art["params"]), run)
    doc = json.load(open(run / "final.json"))
    doc["version"] = 99
    (run / "final.json").write_text(json.dumps(doc))
    assert _predict(art, str(run / "final.params"), tmp_path) == 2
    _one_line_error(capsys, "version 99", "newer duc-hdc")


def test_base_width_is_one_option_of_every_model_command(art, tmp_path, capsys):
    # a narrow random model exported from the command line (was "unrecognized arguments")
    out = str(tmp_path / "narrow")
    assert cli.main(["export", "--model", "duc_hdc_resnet18", "--classes", "5", "--base-width",
                     "8", "--random-weights", "--shape", "1,3,32,64", "--out", out,
                     "--no-check"]) == 0
    capsys.readouterr()
    assert duc_hdc.load(out).config["base_width"] == 8
    # a model name with weights of that width, in predict and evaluate alike
    assert _predict(art, "duc_hdc_resnet18", tmp_path, "--params", art["params"], "--classes",
                    "5", "--base-width", "8") == 0
    capsys.readouterr()
    # an artifact's own width wins: another one is refused, naming both
    assert _predict(art, art["params"], tmp_path, "--base-width", "16") == 2
    _one_line_error(capsys, "--base-width 16", "it has 8")
