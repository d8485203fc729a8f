"""The list of published weight files: consistent with the models, recipes and README, and
used by the scripts to say where a missing file is, which -a a file needs and which
normalisation the SENet authors' weights need."""
import json
import re

import pytest
from eval_fixtures import error_lines, make_weight_file, run_main, run_script
from paths import REPO

import export
import infer
import validation
from models import available_architectures
from utils.process.errors import USER_ERROR_STATUS
from utils.weights.published import BASE_URL, PUBLISHED

PHOTO = REPO / "data" / "demo" / "val" / "ILSVRC2012_val_00000001.JPEG"


def test_every_entry_names_a_network_a_recipe_and_its_layout():
    assert len(PUBLISHED) == 40
    for name, w in PUBLISHED.items():
        assert w.arch in available_architectures(), name
        assert w.channel_last == ("nhwc" in name), name  # the official naming rule
        assert w.recipe == "" or (REPO / "cfg" / f"{w.recipe}.yaml").is_file(), name
        assert (w.norm == "senet_author") == name.endswith("_by_author.h5"), name
        assert w.url == BASE_URL + name and 15 < w.top1_error < 35


def test_the_readme_table_is_this_list():
    text = (REPO / "docs" / "evaluation.md").read_text()
    table = text[text.index("## Published weight files"):text.index("## Measured here")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 5 or ".h5" not in cells[4]:
            continue
        files = re.findall(r"`([^`]+\.h5)`", cells[4])
        assert re.findall(r"\]\(([^)]+)\)", cells[4]) == [BASE_URL + f for f in files], line
        errors = [float(e) for e in cells[3].split(" / ")]
        mixed = cells[1].split(" / ")
        assert len(errors) == len(files), line
        for i, (f, e) in enumerate(zip(files, errors)):
            rows[f] = (e, mixed[min(i, len(mixed) - 1)] == "yes")
    assert rows == {n: (w.top1_error, w.channel_last) for n, w in PUBLISHED.items()}


def test_a_missing_published_file_says_where_to_download_it(tmp_path, capsys):
    missing = tmp_path / "rn50-nhwc_cos90.h5"
    assert run_main(infer.main, PHOTO, missing, "-a", "resnet50") == USER_ERROR_STATUS
    assert error_lines(capsys.readouterr().err) == [
        f"error: {missing}: no such weight file; it is published: download "
        f"{BASE_URL}rn50-nhwc_cos90.h5, or give just its name to have it downloaded into the "
        "cache"]
    assert run_main(infer.main, PHOTO, tmp_path / "mine.h5", "-a", "resnet50") == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'mine.h5'}: no such weight file"]


def test_a_published_file_run_with_another_architecture_names_its_own(tmp_path, capsys):
    weights = make_weight_file(tmp_path / "rn18-nhwc.h5", "resnet18", num_classes=1000)
    list_file = tmp_path / "val"
    list_file.write_text(f"{PHOTO.name} 0\n")
    code = run_main(validation.main, weights, "-a", "resnet34", "-V", PHOTO.parent,
                    "--val-list", list_file, "--spatial-size", "32", "--no-progress")
    assert code == USER_ERROR_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {weights}: does not fit resnet34: parameter ")
    assert line.endswith("(rn18-nhwc.h5 is the published resnet18 file: use -a resnet18)")


@pytest.mark.slow
def test_the_senet_authors_weights_get_their_normalisation_or_a_warning(tmp_path):
    weights = make_weight_file(tmp_path / "se_resnet50_by_author.h5", "se_resnet50",
                               num_classes=1000)

    def classify(*norm):
        result = run_script("infer.py", PHOTO, weights, "--spatial-size", "32", "--json",
                            *norm, check=True)
        return json.loads(result.stdout)["predictions"], result.stderr

    implied, log = classify()  # -a and -n from the published name
    explicit, _ = classify("-n", "senet_author")
    assert implied == explicit
    assert "published se_resnet50 weights (the SENet authors' weights; top-1 error 22.42 % " \
           "as published)" in log and "warning" not in log
    other, log = classify("-n", "default")
    assert other != explicit
    assert ("warning: se_resnet50_by_author.h5 was trained with -n senet_author "
            "normalisation; with -n default its predictions are off") in log


@pytest.mark.parametrize("script", [infer, validation, export])
def test_a_published_file_brings_its_network_and_normalisation(script, capsys):
    first = [str(PHOTO)] if script is infer else []
    args = script.parse_args([*first, "se_resnext50_by_author.h5", "-o", "x.onnx"]
                             if script is export else [*first, "se_resnext50_by_author.h5"])
    assert args.arch == "se_resnext50"
    assert getattr(args, "norm_config", "senet_author") == "senet_author"
    mine = script.parse_args([*first, "mine.h5", "-a", "resnet18"]
                             + (["-o", "x.nnp"] if script is export else []))
    assert mine.arch == "resnet18" and getattr(mine, "norm_config", "default") == "default"
    given = script.parse_args([*first, "rn50-nhwc.h5", "-a", "resnet34"]
                              + (["-o", "x.nnp"] if script is export else []))
    assert given.arch == "resnet34"  # what is given wins (and loading then says it is wrong)
    with pytest.raises(SystemExit) as e:
        script.parse_args([*first, "mine.h5"] + (["-o", "x.nnp"] if script is export else []))
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: the following arguments are required: -a/--arch (only a published weight "
        "file's name tells its network)")
