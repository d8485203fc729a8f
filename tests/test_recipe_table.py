"""The table of recipe keys (docs/recipe-keys.md): rendered from the declarations, equal to
them, and saying what they do."""
from __future__ import annotations

import pytest
from paths import CFG, REPO

from utils.process.errors import UsageError
from utils.recipe.config import load_config
from utils.recipe.key_table import KEY_TABLE_BEGIN, KEY_TABLE_END, key_table, with_key_table


def test_the_keys_page_table_is_the_declarations():
    """Regenerate with `python -m utils.recipe.key_table docs/recipe-keys.md`."""
    text = (REPO / "docs" / "recipe-keys.md").read_text(encoding="utf-8")
    begin, end = text.index(KEY_TABLE_BEGIN), text.index(KEY_TABLE_END)
    assert text[begin + len(KEY_TABLE_BEGIN) + 1:end] == key_table()
    assert with_key_table(text) == text


def test_the_table_says_what_the_declarations_do(tmp_path):
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in
            key_table().splitlines()[2:]}
    assert rows["`momentum`"][:3] == ["number", "required", "[0, 1)"]
    assert rows["`lr_scheduler.args.epochs` (EpochCosine)"][1] == "the top-level `epochs`"
    assert rows["`lr_scheduler.args.decay_at` (EpochStep)"][:3] == [
        "list of integers", "[30, 60, 80]", "each >= 0"]
    assert rows["`augmentation.n`"][:3] == ["integer", "2", "1..10"]
    assert rows["`augmentation.random_area`"][2] == "0 < low <= high <= 1"
    assert "EpochCosineLearningRateScheduler (or EpochCosine)" in rows["`lr_scheduler.type`"][2]
    # The table's keys are those of saved recipes that between them hold every key.
    def dotted(data, prefix=""):
        for key, value in data.items():
            yield prefix + key
            if isinstance(value, dict):
                yield from dotted(value, f"{prefix}{key}.")

    modern = tmp_path / "modern.yaml"
    modern.write_text((CFG / "cos90_modern.yaml").read_text().replace(
        "mixup_switch_prob: 0.5", "mixup_switch_prob: 0.3").replace(  # saved when not the
        "    warmup_epochs: 16\n", "    warmup_epochs: 16\n    min_lr: 1e-6\n").replace(
        "augmentation:\n", "val_resize: 232\naugmentation:\n  random_erasing: 0.25\n"
        "  erasing_area: [0.05, 0.3]\n  erasing_aspect: [0.5, 2]\n"
        "  repeated_augmentation: 3\n"))
    solvers = []  # (the solver keys: lamb's and lars' sections hold them all)
    for kind in ("lamb", "lars"):
        solvers.append(tmp_path / f"{kind}.yaml")
        solvers[-1].write_text((CFG / "step90.yaml").read_text() + f"solver: {{type: {kind}}}\n")
    distilling = tmp_path / "distilling.yaml"  # (the loss keys, distillation's not defaults)
    distilling.write_text((CFG / "rsb_a2.yaml").read_text()
                          + "distillation_alpha: 0.3\ndistillation_temperature: 2.0\n")
    saved = {key for path in (modern, CFG / "step90.yaml", *solvers, distilling)
             for key in dotted(load_config(path).to_dict())}
    assert {key.split("`")[1] for key in rows} == saved
    stale = f"intro\n{KEY_TABLE_BEGIN}\n| old |\n{KEY_TABLE_END}\nrest\n"
    assert with_key_table(stale) == \
        f"intro\n{KEY_TABLE_BEGIN}\n{key_table()}{KEY_TABLE_END}\nrest\n"
    with pytest.raises(UsageError, match="markers"):
        with_key_table("no markers")
