"""Recipes checked by value: every numeric key's range, the YAML top level, clear messages."""
import os

import pytest

from duc_hdc.config import CONFIG_DIR, ConfigError, load_config

SYNTHETIC = os.path.join(CONFIG_DIR, "synthetic.yaml")


@pytest.mark.parametrize("key,value,expected", [
    ("train.epochs", -3, ">= 1"),
    ("train.epochs", 0, ">= 1"),
    ("train.max_iters", -1, ">= 1 (or null)"),
    ("train.max_iters", 0, ">= 1 (or null)"),
    ("train.lr", -1, "> 0"),
    ("train.lr", 0, "> 0"),
    ("data.num_workers", -1, ">= 0"),
    ("train.batch_size_per_device", 0, ">= 1"),
    ("train.clip_gradient", -1.0, ">= 0 (or null)"),
    ("train.momentum", 1.0, ">= 0 and < 1"),
    ("train.momentum", -0.1, ">= 0 and < 1"),
    ("train.wd", -1e-4, ">= 0"),
    ("train.keep_last", 0, ">= 1"),
    ("train.checkpoint_every_iters", 0, ">= 1"),
    ("train.log_every_iters", 0, ">= 1"),
    ("train.val_every_epochs", 0, ">= 1"),
    ("train.warmup_iters", -5, ">= 0"),
    ("train.lr_factor", 0, "> 0 and <= 1"),
    ("train.lr_step_epochs", 0, ">= 1"),
    ("train.seed", -1, ">= 0 and <= 4294967295"),
    ("data.anchor_jitter", -2, ">= 0 (or null)"),
    ("data.ignore_label", 300, ">= 0 and <= 255"),
    ("model.classes", 0, ">= 1"),
    ("model.base_width", 0, ">= 1"),
])
def test_out_of_range_values_name_file_key_value_and_range(key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["%s=%r" % (key, value)])
    msg = str(err.value)
    assert msg == "--set %s=%r: %s = %r is out of range: must be %s" % (key, value, key, value,
                                                                       expected)


@pytest.mark.parametrize("scales", ["[0]", "[-1.0]", "[1.0, 0]", "[]"])
def test_scales_must_be_positive(scales):
    with pytest.raises(ConfigError, match=r"^--set data.scales=.*: data.scales = .*: must be a "
                                          r"non-empty list of numbers > 0"):
        load_config("synthetic", ["data.scales=%s" % scales])


def test_in_range_edges_are_accepted():
    cfg = load_config("synthetic", ["train.max_iters=null", "train.clip_gradient=0",
                                    "data.num_workers=0", "train.momentum=0", "train.wd=0",
                                    "train.max_iters=1", "train.epochs=1"])
    assert cfg["train"]["max_iters"] == 1 and cfg["data"]["num_workers"] == 0


def test_every_numeric_key_has_a_range():
    from duc_hdc.config import RANGES, SCHEMA

    numeric = {"%s.%s" % (s, k) for s, spec in SCHEMA.items() if isinstance(spec, dict)
               for k, (types, _) in spec.items()
               if int in (types if isinstance(types, tuple) else (types,))
               or float in (types if isinstance(types, tuple) else (types,))}
    numeric -= {"model.cell_width"}  # closed choices
    assert numeric <= set(RANGES), sorted(numeric - set(RANGES))


@pytest.mark.parametrize("text,what", [("", "an empty file"), ("- 1\n- 2\n", "a list"),
                                       ("just a string\n", "a str")])
def test_top_level_must_be_a_mapping(tmp_path, text, what):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    for overrides in (None, ["train.lr=0.1"]):
        with pytest.raises(ConfigError) as err:
            load_config(str(path), overrides)
        assert str(err.value).startswith("%s: the top level of a recipe must be a mapping "
                                         "with sections" % path)
        assert str(err.value).endswith("got %s" % what)


def test_resume_config_applies_only_extending_keys():
    from duc_hdc.config import RESUME_KEYS, resume_config

    saved = load_config("synthetic", ["train.keep_last=10"])
    merged, changed = resume_config(saved, overrides=["train.epochs=60", "train.keep_last=10",
                                                      "train.out_dir=elsewhere"])
    assert merged["train"]["epochs"] == 60 and merged["train"]["keep_last"] == 10
    assert merged["train"]["out_dir"] == saved["train"]["out_dir"]
    assert changed == [("train.epochs", 48, 60)]
    with pytest.raises(ConfigError, match=r"--resume: train\.lr is 0\.004 in the run being "
                                          r"resumed, 0\.5 now.*only train\.epochs, "
                                          r"train\.max_iters.*--set train\.lr=0\.5 --set "
                                          r"model\.init_params=R/ckpt\.params"):
        resume_config(saved, overrides=["train.lr=0.5"], init_params_hint="R/ckpt.params")
    # a whole recipe: every key compared; the saved one's other settings must be repeated
    with pytest.raises(ConfigError, match=r"train\.keep_last is 10 in the run being resumed, 2"):
        resume_config(saved, cfg=load_config("synthetic"))
    assert set(RESUME_KEYS) >= {"train.epochs", "train.max_iters", "train.log_every_iters"}


def test_set_errors_blame_the_set_option_not_the_recipe():
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["train.lr=-1"])
    assert str(err.value) == "--set train.lr=-1: train.lr = -1 is out of range: must be > 0"
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["data.crop_size=[100,100]"])
    assert str(err.value).startswith("--set data.crop_size=[100,100]: data.crop_size = ")
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["train.epochs=ten"])
    assert str(err.value).startswith("--set train.epochs=ten: train.epochs: expected int")



@pytest.mark.parametrize("path", ["/data/run #2/train.rec", "/data/a: b/train.rec",
                                  "#1/train.rec"])
def test_set_takes_a_path_with_yaml_characters_as_written(path):
    """YAML read "/data/run #2/train.rec" as "/data/run" and a comment (then "no such RecordIO
    file /data/run"), and "a: b" as a mapping: a value YAML would cut or turn into a mapping is
    the text itself (a quoted YAML string keeps its "#")."""
    cfg = load_config("synthetic", ["data.train_rec=%s" % path])
    assert cfg["data"]["train_rec"] == path
    assert load_config("synthetic", ['data.train_rec="a #b"'])["data"]["train_rec"] == "a #b"
    assert load_config("synthetic", ["train.lr=0.5"])["train"]["lr"] == 0.5


def test_set_value_yaml_cannot_parse_is_one_line():
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["data.crop_size=[64,128"])
    message = str(err.value)
    assert "\n" not in message and message.startswith("--set data.crop_size: cannot parse "
                                                     "value '[64,128'"), message


def test_type_errors_in_a_yaml_name_the_file(tmp_path):
    import yaml

    cfg = yaml.safe_load(open(SYNTHETIC))
    cfg["train"]["lr"] = "fast"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == "%s: train.lr: expected int or float, got 'fast' (str)" % path


def test_set_list_values_without_brackets():
    cfg = load_config("synthetic", ["data.crop_size=64,128", "data.scales=0.5,1.0,2"])
    assert cfg["data"]["crop_size"] == [64, 128]
    assert cfg["data"]["scales"] == [0.5, 1.0, 2]
    assert load_config("synthetic", ["data.crop_size=[64, 128]"])["data"]["crop_size"] == [64, 128]
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["data.crop_size=64"])
    assert "write a list as 64,128 or [64,128]" in str(err.value), str(err.value)


@pytest.mark.parametrize("value, says", [
    ("foo", "unknown dilation schedule 'foo'"),
    ("[1,2,3]", "3 rates given, the backbone has 4 blocks"),
    ("[1,2,0,1]", "every rate must be an integer >= 1"),
])
def test_dilations_are_checked_with_the_recipe_naming_the_key(value, says):
    """The network's own error named no key (and came after the run folder was made)."""
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["model.dilations=%s" % value])
    message = str(err.value)
    assert message.startswith("--set model.dilations=%s: model.dilations = " % value), message
    assert says in message
    for good in ("hdc", "none", "[1,2,5,9]", "[[1,2],[5,9]]"):
        load_config("synthetic", ["model.dilations=%s" % good])
