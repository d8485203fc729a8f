"""Training configs: the shipped recipes, strict validation, and save/load round trips."""
import copy
import os
import re

import pytest
from annotated_types import Ge, Gt, Le, Lt
from paths import CFG
from pydantic_core import PydanticCustomError

from utils.recipe.augmentation import Augmentation, ProgressiveResizing
from utils.recipe.config import ConfigError, TrainConfig, config_from_data, load_config, save_config
from utils.recipe.fields import Ordered, bound_words, type_words
from utils.recipe.schedules import EpochCosineSchedule, EpochStepSchedule

RECIPES = ["step90", "cos90", "cos350", "mixup90", "mixup250", "mixup350", "finetune10"]

COSINE = """\
weight_decay: 3.0517578125e-05
momentum: 0.875
epochs: 90
label_smoothing: 0.1
loss_scaling: 128
mixup: 0
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args:
    base_lr: 0.001
    warmup_epochs: 16
    epochs:
"""


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recipes_hold_the_official_values():
    configs = {name: load_config(CFG / f"{name}.yaml") for name in RECIPES}
    step = configs["step90"]
    assert (step.weight_decay, step.momentum, step.epochs) == (1e-4, 0.9, 90)
    assert (step.label_smoothing, step.loss_scaling, step.mixup) == (0.1, 256, 0)
    assert step.lr_scheduler.type == "EpochStepLearningRateScheduler"
    assert step.lr_scheduler.args == EpochStepSchedule(
        base_lr=0.1 / 256, decay_at=(30, 60, 80), decay_rate=0.1, warmup_epochs=5,
        legacy_warmup=True,
    )
    expected = {"cos90": (90, 0.0), "cos350": (350, 0.0), "mixup90": (90, 0.2),
                "mixup250": (250, 0.2), "mixup350": (350, 0.2), "finetune10": (10, 0.0)}
    for name, (epochs, mixup) in expected.items():
        config = configs[name]
        assert (config.weight_decay, config.momentum) == (2.0**-15, 0.875), name
        assert (config.label_smoothing, config.loss_scaling) == (0.1, 128), name
        assert (config.epochs, config.mixup) == (epochs, mixup), name
        assert config.lr_scheduler.type == "EpochCosineLearningRateScheduler"
        warmup = 0 if name == "finetune10" else 16
        assert config.lr_scheduler.args == EpochCosineSchedule(0.256 / 256, epochs, warmup)
    for name, config in configs.items():  # the official schedulers change the lr per epoch
        assert config.lr_scheduler.per_iteration is False, name


def test_the_per_iteration_finetune_differs_from_finetune10_only_there():
    official = load_config(CFG / "finetune10.yaml")
    variant = load_config(CFG / "finetune10_per_iteration.yaml")
    assert variant.lr_scheduler.per_iteration is True
    assert variant.lr_scheduler.args == official.lr_scheduler.args
    assert variant.to_dict() == {**official.to_dict(), "lr_scheduler": {
        **official.to_dict()["lr_scheduler"], "per_iteration": True}}


def test_each_recipe_starts_with_a_comment_header():
    for name in RECIPES:
        assert (CFG / f"{name}.yaml").read_text().startswith("# "), name


def test_exponent_without_dot_is_a_float(tmp_path):
    config = load_config(write(tmp_path, COSINE.replace("3.0517578125e-05", "1e-4")))
    assert config.weight_decay == 1e-4
    config = load_config(write(tmp_path, COSINE.replace("base_lr: 0.001", "base_lr: 1E-3")))
    assert config.lr_scheduler.args.base_lr == 1e-3


def test_epochs_override_fills_the_cosine_epochs(tmp_path):
    config = load_config(write(tmp_path, COSINE), epochs_override=5)
    assert config.epochs == 5
    assert config.lr_scheduler.args.epochs == 5
    assert load_config(write(tmp_path, COSINE)).lr_scheduler.args.epochs == 90
    explicit = COSINE.replace("    epochs:\n", "    epochs: 80\n")
    assert load_config(write(tmp_path, explicit), 5).lr_scheduler.args.epochs == 80


def test_empty_top_level_epochs_needs_the_override(tmp_path):
    path = write(tmp_path, COSINE.replace("epochs: 90", "epochs:"))
    assert load_config(path, epochs_override=3).epochs == 3
    with pytest.raises(ConfigError, match="'epochs'"):
        load_config(path)


def test_short_type_names_and_defaults_of_the_official_arguments(tmp_path):
    text = COSINE.replace("EpochCosineLearningRateScheduler", "EpochCosine")
    config = load_config(write(tmp_path, text.replace("    warmup_epochs: 16\n", "")))
    assert config.lr_scheduler.args == EpochCosineSchedule(0.001, 90, 5)
    assert config.lr_scheduler.type == "EpochCosineLearningRateScheduler"
    step = COSINE.split("lr_scheduler:")[0] + (
        "lr_scheduler:\n  type: EpochStep\n  args:\n    base_lr: 0.1\n"
    )
    config = load_config(write(tmp_path, step))
    assert config.lr_scheduler.args == EpochStepSchedule(0.1, (30, 60, 80), 0.1, 5, False)


def test_per_iteration_key(tmp_path):
    config = load_config(write(tmp_path, COSINE + "  per_iteration: true\n"))
    assert config.lr_scheduler.per_iteration is True


@pytest.mark.parametrize("name", RECIPES)
def test_save_then_load_gives_an_equal_config(tmp_path, name):
    config = load_config(CFG / f"{name}.yaml", epochs_override=7)
    target = tmp_path / "monitor" / "cfg" / f"{name}.yaml"
    save_config(config, target)
    again = load_config(target)
    assert again == config
    assert os.listdir(target.parent) == [target.name]  # no temporary file left behind


def test_save_fills_the_cosine_epochs(tmp_path):
    target = tmp_path / "saved.yaml"
    save_config(load_config(CFG / "cos90.yaml"), target)
    assert "    epochs: 90\n" in target.read_text()


def test_save_replaces_an_existing_file(tmp_path):
    target = write(tmp_path, "old contents")
    config = load_config(CFG / "mixup250.yaml", epochs_override=1)
    save_config(config, target)
    assert load_config(target) == config


def test_config_is_frozen():
    config = load_config(CFG / "cos90.yaml")
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]
    assert isinstance(config, TrainConfig)


@pytest.mark.parametrize(
    "old, new, line, message",
    [
        ("momentum: 0.875", "momentun: 0.875", 2,
         r"unknown key 'momentun'.*did you mean 'momentum'"),
        ("    warmup_epochs: 16", "    warmup_epoch: 16", 11,
         r"unknown key 'warmup_epoch' in 'lr_"),
        ("  args:", "  arguments:", 9, r"unknown key 'arguments' in 'lr_scheduler'"),
        ("    warmup_epochs: 16", "    decay_at: [3]", 11, r"unknown key 'decay_at'.*valid keys"),
        ("momentum: 0.875", "momentum: fast", 2, r"'momentum' must be a number, got str 'fast'"),
        ("momentum: 0.875", "momentum: 1.5", 2, r"'momentum' must be in \[0, 1\), got 1.5$"),
        ("epochs: 90", "epochs: 90.5", 3, r"'epochs' must be an integer"),
        ("epochs: 90", "epochs: true", 3, r"'epochs' must be an integer"),
        ("loss_scaling: 128", "loss_scaling: .inf", 5, r"'loss_scaling' must be finite"),
        ("mixup: 0\n", "", None, r"missing or empty required key 'mixup'"),
        ("    base_lr: 0.001\n", "", 9,
         r"missing or empty required key 'lr_scheduler.args.base_lr'"),
        ("    base_lr: 0.001", "    base_lr: [1]", 10,
         r"'lr_scheduler.args.base_lr' must be a num"),
        ("EpochCosineLearningRateScheduler", "Cosine", 8, r"unknown lr_scheduler type 'Cosine'"),
        ("EpochCosineLearningRateScheduler", "[a]", 8, r"unknown lr_scheduler type \['a'\]"),
        ("  args:\n    base_lr: 0.001\n    warmup_epochs: 16\n    epochs:\n", "  args: 3\n", 9,
         r"'lr_scheduler.args' must be a mapping"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_file_and_line(tmp_path, old, new, line, message):
    """The line is the offending key's (of the section holding a missing key; none for a
    missing top-level key)."""
    assert old in COSINE
    path = write(tmp_path, COSINE.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: " if line is None else f"{path}, line {line}: ")
    assert "\n" not in text


def test_unknown_key_lists_the_valid_keys(tmp_path):
    path = write(tmp_path, COSINE + "batch_size: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "unknown key 'batch_size' in the top level" in str(caught.value)
    for key in ("weight_decay", "momentum", "epochs", "label_smoothing", "loss_scaling",
                "mixup", "lr_scheduler"):
        assert key in str(caught.value)


def test_decay_at_must_be_integers(tmp_path):
    step = COSINE.split("lr_scheduler:")[0] + (
        "lr_scheduler:\n  type: EpochStep\n  args:\n    base_lr: 0.1\n    decay_at: [30, x]\n"
    )
    with pytest.raises(ConfigError, match=r"'lr_scheduler.args.decay_at\[1\]' must be an int"):
        load_config(write(tmp_path, step))


def test_per_iteration_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="'lr_scheduler.per_iteration' must be true or false"):
        load_config(write(tmp_path, COSINE + "  per_iteration: sometimes\n"))


def test_bad_epochs_override(tmp_path):
    with pytest.raises(ConfigError, match="'--epochs' must be >= 1"):
        load_config(write(tmp_path, COSINE), epochs_override=0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("momentum: [0.9\n", r"malformed YAML at line 2, column 1"),
        ("a: 1\n b: 2\n", r"malformed YAML at line 2"),
        ("", r"the config is empty"),
        ("- 1\n- 2\n", r"the config must be a mapping"),
    ],
)
def test_unusable_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_a_key_given_twice_is_named(tmp_path):
    """PyYAML keeps the last value silently: an edit of the first would change nothing."""
    path = write(tmp_path, COSINE + "momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"line 13, column 1: key 'momentum' given twice "
                                          r"\(first on line 2\)"):
        load_config(path)
    path = write(tmp_path, COSINE.replace("    base_lr: 0.001\n",
                                          "    base_lr: 0.001\n    base_lr: 0.002\n"))
    with pytest.raises(ConfigError, match=r"key 'base_lr' given twice \(first on line 10\)"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nothere.yaml: config file not found"):
        load_config(tmp_path / "nothere.yaml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_every_shipped_config_loads_and_round_trips(tmp_path):
    shipped = sorted(CFG.glob("*.yaml"))
    assert {p.stem for p in shipped} >= set(RECIPES) | {"quickstart"}
    for path in shipped:
        config = load_config(path)
        save_config(config, tmp_path / path.name)
        assert load_config(tmp_path / path.name) == config, path.name


def test_augmentation_section(tmp_path):
    """Optional and ours: absent, the official augmentation, and no key in to_dict (so that
    the identity of runs from before the option still matches)."""
    plain = load_config(write(tmp_path, COSINE))
    assert plain.augmentation == Augmentation() and "augmentation" not in plain.to_dict()
    config = load_config(write(tmp_path, COSINE + """\
augmentation:
  random_area: [0.35, 1]
  random_aspect_ratio: [0.75, 1.3333333]
  policy: randaugment
  n: 2
  m: 9
"""))
    assert config.augmentation == Augmentation((0.35, 1.0), (0.75, 1.3333333), "randaugment",
                                               2, 9)
    saved = tmp_path / "saved.yaml"
    save_config(config, saved)
    assert load_config(saved) == config
    assert config.to_dict()["augmentation"]["random_area"] == [0.35, 1.0]


@pytest.mark.parametrize("section, message", [
    ("  policy: randaugmnt\n", "unknown augmentation.policy 'randaugmnt' (did you mean "
                                "'randaugment'?)"),
    ("  random_area: [0.5, 0.2]\n", "'augmentation.random_area' must be 0 < low <= high <= 1"),
    ("  random_area: 0.5\n", "'augmentation.random_area' must be a list [low, high]"),
    ("  m: 31\n", "'augmentation.m' must be in 0..30, got 31"),
    ("  flip: 0.5\n", "unknown key 'flip' in 'augmentation'"),
])
def test_augmentation_mistakes_are_named(tmp_path, section, message):
    path = write(tmp_path, COSINE + "augmentation:\n" + section)
    with pytest.raises(ConfigError, match=re.escape(f"{path}, line 14: {message}")):
        load_config(path)


def test_cutmix_and_the_switch_probability(tmp_path):
    plain = load_config(write(tmp_path, COSINE))
    assert (plain.cutmix, plain.mixup_switch_prob) == (0.0, 0.5)
    assert "cutmix" not in plain.to_dict() and "mixup_switch_prob" not in plain.to_dict()
    config = load_config(write(tmp_path, COSINE.replace("mixup: 0", "mixup: 0.2")
                               + "cutmix: 1.0\nmixup_switch_prob: 0.3\n"))
    assert (config.mixup, config.cutmix, config.mixup_switch_prob) == (0.2, 1.0, 0.3)
    assert config.to_dict()["cutmix"] == 1.0
    with pytest.raises(ConfigError, match="'mixup_switch_prob' must be in \\[0, 1\\]"):
        load_config(write(tmp_path, COSINE + "mixup_switch_prob: 2\n"))


def test_progressive_resizing(tmp_path):
    config = load_config(write(tmp_path, COSINE + "progressive_resizing: {start: 160, end: 224, "
                                                  "start_epoch: 10, end_epoch: 70}\n"))
    resizing = config.progressive_resizing
    assert [resizing.resolution(e) for e in (0, 10, 25, 40, 55, 70, 89)] == \
        [160, 160, 192, 192, 224, 224, 224]  # multiples of 32: 176 -> 192, 208 -> 224
    assert config.to_dict()["progressive_resizing"]["end_epoch"] == 70
    assert ProgressiveResizing(16, 40, 0, 3).resolution(1) == 24  # multiples of 8 below 64
    assert load_config(write(tmp_path, COSINE)).progressive_resizing is None
    with pytest.raises(ConfigError, match="needs 0 <= start_epoch <= end_epoch"):
        load_config(write(tmp_path, COSINE + "progressive_resizing: {start: 160, end: 224, "
                                             "start_epoch: 10, end_epoch: 5}\n"))


def test_lines_of_nested_keys_list_items_and_rules(tmp_path):
    step = COSINE.split("lr_scheduler:")[0] + (
        "lr_scheduler:\n  type: EpochStep\n  args:\n    base_lr: 0.1\n    decay_at:\n"
        "      - 30\n      - -1\n")
    cases = [
        (step, "line 13: 'lr_scheduler.args.decay_at[1]' must be >= 0, got -1"),
        (COSINE + "augmentation:\n  policy: trivialaugment\n  m: 3\n",
         "line 15: 'augmentation.m' is a setting of policy randaugment; policy trivialaugment "
         "ignores it"),
        (COSINE + "augmentation:\n  random_area: [0.5, 0.2]\n",
         "line 14: 'augmentation.random_area' must be 0 < low <= high <= 1, got [0.5, 0.2]"),
        (COSINE + "progressive_resizing:\n  start: 160\n  end: 224\n  start_epoch: 9\n"
                  "  end_epoch: 5\n", "line 13: 'progressive_resizing' needs 0 <= start_epoch"),
        (COSINE + "progressive_resizing: {start: 160, end: 4, start_epoch: 0, end_epoch: 5}\n",
         "line 13: 'progressive_resizing.end' must be >= 8, got 4"),
        (COSINE.replace("  type: EpochCosineLearningRateScheduler\n", ""),
         "line 7: missing or empty required key 'lr_scheduler.type'"),
        (COSINE + "1: 2\n", "line 13: unknown key '1' in the top level"),
    ]
    for text, message in cases:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=re.escape(f"{path}, {message}")):
            load_config(path)


def test_an_override_is_named_without_a_line(tmp_path):
    path = write(tmp_path, COSINE)
    with pytest.raises(ConfigError) as caught:
        load_config(path, epochs_override=0)
    assert str(caught.value) == f"{path}: '--epochs' must be >= 1, got 0"
    path = write(tmp_path, "- 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: the config must be a mapping of keys to values, " \
                                f"got list [1]"


def test_cosine_min_lr(tmp_path):
    """Ours, through the declaration alone: loaded, bounded, saved only when set (so the saved
    configs and run identities from before it stay as they were)."""
    plain = load_config(write(tmp_path, COSINE))
    assert plain.lr_scheduler.args.min_lr == 0.0
    assert "min_lr" not in plain.to_dict()["lr_scheduler"]["args"]
    path = write(tmp_path, COSINE.replace("    epochs:\n", "    epochs:\n    min_lr: 1e-5\n"))
    config = load_config(path)
    assert config.lr_scheduler.args == EpochCosineSchedule(0.001, 90, 16, 1e-5)
    assert config.to_dict()["lr_scheduler"]["args"]["min_lr"] == 1e-5
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    path = write(tmp_path, COSINE.replace("    epochs:\n", "    epochs:\n    min_lr: 0.01\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == \
        f"{path}, line 13: 'lr_scheduler.args.min_lr' must be <= base_lr (0.001), got 0.01"
    step = COSINE.split("lr_scheduler:")[0] + (
        "lr_scheduler:\n  type: EpochStep\n  args:\n    base_lr: 0.1\n    min_lr: 0\n")
    with pytest.raises(ConfigError, match=r"line 11: unknown key 'min_lr' in 'lr_scheduler.args' "
                                          r"of EpochStepLearningRateScheduler"):
        load_config(write(tmp_path, step))


def test_any_wrong_value_of_any_key_is_one_line_naming_its_line(tmp_path):
    """Every key of two recipes that between them hold them all, given each kind of wrong
    value: a one-line ConfigError naming the file and the key's line (or the value loads)."""
    import yaml

    def paths(data, prefix=()):
        for key, value in data.items():
            yield prefix + (key,)
            if isinstance(value, dict):
                yield from paths(value, prefix + (key,))

    wrong = ["x", {"a": 1}, True, -1, 1e400, [1.5, "y"]]
    for name in ("cos90_modern", "step90"):
        original = load_config(CFG / f"{name}.yaml").to_dict()
        for path in paths(original):
            for value in wrong:
                data = copy.deepcopy(original)
                parent = data
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = value
                file = tmp_path / "wrong.yaml"
                file.write_text(yaml.safe_dump(data, sort_keys=False))
                try:
                    load_config(file)
                except ConfigError as e:
                    assert re.match(rf"{re.escape(str(file))}, line \d+: '?\S", str(e)), str(e)
                    assert "\n" not in str(e) and "pydantic" not in str(e), str(e)


# As save_config wrote cfg/cos90_modern.yaml (with -e 7) before the keys were declared once.
SAVED_BEFORE = """\
# Effective training configuration (from cfg/cos90_modern.yaml).
weight_decay: 3.0517578125e-05
momentum: 0.875
epochs: 7
label_smoothing: 0.1
loss_scaling: 128.0
mixup: 0.2
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args:
    base_lr: 0.001
    epochs: 7
    warmup_epochs: 16
  per_iteration: false
cutmix: 1.0
progressive_resizing:
  start: 160
  end: 192
  start_epoch: 67
  end_epoch: 78
augmentation:
  random_area:
  - 0.08
  - 1.0
  random_aspect_ratio:
  - 0.75
  - 1.3333333
  policy: trivialaugment
  n: 2
  m: 9
"""


def test_a_config_saved_before_loads_equal_with_the_same_identity(tmp_path):
    """Its data (a run's identity in its checkpoints) is what to_dict gives now."""
    import yaml

    config = load_config(CFG / "cos90_modern.yaml", epochs_override=7)
    assert load_config(write(tmp_path, SAVED_BEFORE)) == config
    assert config.to_dict() == yaml.safe_load(SAVED_BEFORE)


def test_with_epochs_moves_the_schedule_length_filled_from_the_epochs_and_nothing_else(tmp_path):
    filled = write(tmp_path, COSINE, "filled.yaml")
    longer = load_config(filled, 5).with_epochs(9)
    assert longer == load_config(filled, 9) and longer.source == str(filled)
    fixed = write(tmp_path, COSINE.replace("    epochs:\n", "    epochs: 90\n"), "fixed.yaml")
    kept = load_config(fixed, 5).with_epochs(9)  # a length of its own stays
    assert (kept.epochs, kept.lr_scheduler.args.epochs) == (9, 90)
    step = load_config(os.path.join(CFG, "step90.yaml"), 5).with_epochs(7)
    assert step.epochs == 7 and step.lr_scheduler.args.decay_at == (30, 60, 80)


def test_a_recipe_comes_back_from_its_data_or_one_line_naming_the_source():
    config = load_config(os.path.join(CFG, "mixup250.yaml"), 3)
    assert config_from_data(config.to_dict(), "x.ckpt") == config
    with pytest.raises(ConfigError, match=r"^x\.ckpt: 'momentum' must be in \[0, 1\), got 2$"):
        config_from_data({**config.to_dict(), "momentum": 2}, "x.ckpt")


# --------------------------------------------------------------------------- the solver section


def test_the_solver_defaults_to_the_official_momentum_and_is_not_saved_then(tmp_path):
    from utils.recipe.solvers import MomentumSolverSection

    for name in RECIPES:
        config = load_config(CFG / f"{name}.yaml")
        assert config.solver == MomentumSolverSection(), name
        assert "solver" not in config.to_dict(), name  # identities as before the section
    explicit = load_config(write(tmp_path, COSINE + "solver: {type: momentum}\n"))
    assert explicit == load_config(write(tmp_path, COSINE, "plain.yaml"))


@pytest.mark.parametrize("section, expected", [
    ("{type: nesterov, exclude_from_decay: batchnorm_and_bias}",
     dict(type="nesterov", exclude_from_decay="batchnorm_and_bias", clip_grad_norm=0.0)),
    ("{type: adamw, beta2: 0.99, eps: 1.0e-6, clip_grad_norm: 1}",
     dict(type="adamw", exclude_from_decay="batchnorm", clip_grad_norm=1.0, beta1=0.9,
          beta2=0.99, eps=1e-6)),
    ("{type: lamb, exclude_from_decay: 1d, gamma_u: 5}",
     dict(type="lamb", exclude_from_decay="1d", clip_grad_norm=0.0, beta1=0.9, beta2=0.999,
          eps=1e-6, gamma_l=0.0, gamma_u=5.0, adapt_excluded=False)),
    ("{type: lars, coefficient: 0.02, adapt_excluded: true, clip_grad_norm:}",
     dict(type="lars", exclude_from_decay="batchnorm", clip_grad_norm=0.0, coefficient=0.02,
          eps=1e-6, adapt_excluded=True)),
])
def test_solver_sections_load_with_their_defaults_and_round_trip(tmp_path, section, expected):
    config = load_config(write(tmp_path, COSINE + f"solver: {section}\n"))
    assert config.to_dict()["solver"] == expected  # every key written, `type` first
    assert list(config.to_dict()["solver"])[0] == "type"
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert config_from_data(config.to_dict(), "x.ckpt") == config


@pytest.mark.parametrize("section, message", [
    ("{type: adamv}", "line 13: unknown solver type 'adamv' (did you mean 'adamw'?); valid "
                      "types: momentum, nesterov, adamw, lamb, lars"),
    ("{beta1: 0.9}", "line 13: missing or empty required key 'solver.type'"),
    ("{type: momentum, beta1: 0.9}", "line 13: unknown key 'beta1' in 'solver' of momentum; "
                                     "valid keys: type, exclude_from_decay, clip_grad_norm"),
    ("{type: adamw, beta2: 1}", "line 13: 'solver.beta2' must be in [0, 1), got 1"),
    ("{type: lamb, gamma_l: 2, gamma_u: 1}",
     "line 13: 'solver.gamma_u' must be >= gamma_l (2), got 1"),
    ("{type: lars, clip_grad_norm: -1}", "line 13: 'solver.clip_grad_norm' must be >= 0, got -1"),
    ("{type: lars, exclude_from_decay: bias}",
     "line 13: unknown solver.exclude_from_decay 'bias'; valid exclude_from_decays: "
     "batchnorm, batchnorm_and_bias, 1d"),
    ("{type: adamw, adapt_excluded: true}", "unknown key 'adapt_excluded' in 'solver' of adamw"),
    ("{type: lamb, adapt_excluded: 1}",
     "line 13: 'solver.adapt_excluded' must be true or false, got int 1"),
])
def test_solver_mistakes_are_one_line_errors_naming_the_line(tmp_path, section, message):
    path = write(tmp_path, COSINE + f"solver: {section}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}, line ") and "\n" not in str(caught.value)


def test_unknown_schedule_types_still_list_the_short_names(tmp_path):
    path = write(tmp_path, COSINE.replace("EpochCosineLearningRateScheduler", "EpochCosin"))
    with pytest.raises(ConfigError, match=r"valid types: EpochStepLearningRateScheduler, "
                                          r"EpochCosineLearningRateScheduler, EpochStep, "
                                          r"EpochCosine$"):
        load_config(path)


def test_an_ordered_pair_is_above_its_low_bound_and_may_be_equal():
    rule = Ordered(0, 1)
    assert rule((0.5, 0.5)) == (0.5, 0.5) and rule((0.25, 1.0)) == (0.25, 1.0)
    for pair, got in (((0.0, 0.5), "[0, 0.5]"), ((2.0, 3.0), "[2, 3]"), ((0.5, 1.5), "[0.5, 1.5]")):
        with pytest.raises(PydanticCustomError) as refused:
            rule(pair)
        assert refused.value.message() == f"must be 0 < low <= high <= 1, got {got}"


@pytest.mark.parametrize("core, bounds, words", [
    (float, [Gt(0)], "> 0"), (float, [Ge(0)], ">= 0"), (float, [Le(1)], "<= 1"),
    (float, [Lt(1)], "< 1"), (float, [Ge(0), Lt(1)], "in [0, 1)"),
    (float, [Gt(0), Le(1)], "in (0, 1]"), (int, [Ge(1), Le(10)], "in 1..10"),
    (int, [Gt(0), Le(10)], "in (0, 10]"), (float, [], ""),
])
def test_bounds_in_words(core, bounds, words):
    assert bound_words(core, bounds) == words


@pytest.mark.parametrize("key, text", [("null", "null"), ("~", "~"), ("Null", "Null")])
def test_a_null_key_is_named_with_its_line(tmp_path, key, text):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((CFG / "quickstart.yaml").read_text() + f"{key}: 3\n")
    line = len(recipe.read_text().splitlines())
    with pytest.raises(ConfigError) as refused:
        load_config(recipe)
    assert str(refused.value) == (f"{recipe}, line {line}: key {text!r} is YAML's null, not a "
                                  "name: remove it, or quote it")


def test_a_recipe_from_data_keeps_its_source_and_a_wrong_epochs_there_is_its_own():
    """The data's `epochs` is not train.py's --epochs: its error is the value's, not the
    flag's."""
    config = load_config(os.path.join(CFG, "quickstart.yaml"))
    assert config_from_data(config.to_dict(), "x.ckpt").source == "x.ckpt"
    with pytest.raises(ConfigError) as refused:
        config_from_data({**config.to_dict(), "epochs": 0}, "x.ckpt")
    assert str(refused.value).startswith("x.ckpt: 'epochs' must be")
    assert "--epochs" not in str(refused.value) and "-e" not in str(refused.value)


def test_the_saved_file_names_its_source_and_keeps_the_keys_in_file_order(tmp_path,
                                                                          monkeypatch):
    import yaml

    config = load_config(os.path.join(CFG, "quickstart.yaml"))
    monkeypatch.chdir(tmp_path)
    save_config(config, "saved.yaml")  # no folder in the name: the current one
    text = (tmp_path / "saved.yaml").read_text()
    source = os.path.join(CFG, "quickstart.yaml")
    assert text.splitlines()[0] == f"# Effective training configuration (from {source})."
    keys = list(yaml.safe_load(text))
    assert keys == list(config.to_dict()) and keys != sorted(keys)


@pytest.mark.parametrize("noun, plural", [("policy", "policies"), ("key", "keys"),
                                          ("solver", "solvers"), ("y", "ys")])
def test_the_plural_in_the_list_of_valid_names(noun, plural):
    from utils.recipe.config import _plural

    assert _plural(noun) == plural


def test_types_in_words_for_the_table_and_the_errors():
    from typing import Dict, Literal, Tuple

    assert type_words(Literal["sgd", "adamw"]) == ("name", "one of sgd, adamw")
    assert type_words(Tuple[int, ...]) == ("list of integers", "a list of integers")
    assert type_words(Tuple[float, float]) == ("[low, high]", "a list [low, high]")
    assert type_words(Dict[str, int]) == ("mapping", "a mapping of keys to values")


@pytest.mark.parametrize("epochs, error", [
    (2**31 - 1, None), (2**31, "'epochs' must be at most 2147483647, got 2147483648")])
def test_an_integer_key_is_at_most_the_common_limit(tmp_path, epochs, error):
    recipe = tmp_path / "r.yaml"
    text = (CFG / "quickstart.yaml").read_text()
    recipe.write_text(re.sub(r"(?m)^epochs: .*$", f"epochs: {epochs}", text))
    if error is None:
        assert load_config(recipe).epochs == epochs
    else:
        with pytest.raises(ConfigError, match=re.escape(error) + "$"):
            load_config(recipe)
