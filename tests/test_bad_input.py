"""Bad inputs of every script, each run as a user would (a subprocess, under a deadline).

Bad inputs tried (`BAD_INPUTS`, one test each, the real script run). "2:" means exit status
2 with exactly one stderr line `error: <text>` naming the file and the problem, no traceback,
and no partial output file; <list> and <n> are the list file and its line.

| script | bad input | what it gets |
| --- | --- | --- |
| train.py | truncated JPEG in the list | 2: cannot decode <file> (line <n> of <list>): ... |
| train.py | garbage bytes named .JPEG | 2: cannot decode <file> (...): not an image (...) |
| train.py | zero-byte .JPEG | 2: cannot decode <file> (line <n> of <list>): empty file |
| train.py | listed file missing | 2: <list>:<n>: file not found: <file> |
| train.py | class id 10, --num-classes 10 | 2: <list>:<n>: class id 10 out of range (0..9) |
| train.py | PNG, CMYK JPEG named .JPEG | works |
| train.py | --model-load-path, other arch | 2: <h5>: does not fit mobilenet_v2: parameter ... |
| train.py | --model-load-path, cut .h5 | 2: <h5>: not a readable NNabla parameter file (...) |
| train.py | malformed YAML | 2: <yaml>: malformed YAML at line 2, column 9: ... |
| train.py | unknown config key | 2: <yaml>, line 1: unknown key 'momentumm' ... 'momentum'? ... |
| train.py | odd -b, mixup config | 2: <yaml>: mixup ... need an even --batch-size, got 7 |
| validation.py | truncated / garbage / empty | 2: cannot decode <file> (line <n> of <list>): ... |
| validation.py | listed file missing | 2: <list>:<n>: file not found: <file> |
| validation.py | class id out of range | 2: <list>:<n>: class id 10 out of range (0..9) |
| validation.py | PNG, CMYK JPEG named .JPEG | works |
| validation.py | other arch / cut .h5 | 2: <h5>: does not fit ... / not a readable ... |
| infer.py | truncated JPEG | 2: cannot decode <file>: ... (the file, no list line) |
| infer.py | garbage / zero-byte .JPEG | 2: cannot read image <file>: not an image / empty file |
| infer.py | missing image | 2: no such image or folder: <file> |
| infer.py | PNG, CMYK JPEG named .JPEG | works |
| infer.py | other arch / cut .h5 | 2: <h5>: does not fit ... / not a readable ... |
| convert_parameter_format.py | cut .h5 | 2: <h5>: not a readable NNabla parameter file |
| export.py | other arch / cut .h5 | 2: <h5>: does not fit ... / not a readable ... |
| create_input_files.py | --verify, cut + empty JPEG | 0: each "unreadable: <file>: ...", left out |
| create_input_files.py | folder missing | 2: folder not found: <dir> |
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
from data_fixtures import photo, save
from eval_fixtures import make_weight_file
from fault_fixtures import leftovers, one_error, run, write_config
from paths import DEMO

pytestmark = pytest.mark.slow  # every test here runs scripts end to end

ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def bad(work) -> Dict[str, Path]:
    """Images (good, broken, and odd-but-valid), lists around each, and weight files."""
    root = work / "images"
    root.mkdir()
    demo = sorted((DEMO / "train" / "bag").iterdir())[:7]
    good = []
    for i, src in enumerate(demo):
        (root / f"good_{i}.JPEG").write_bytes(src.read_bytes())
        good.append(f"good_{i}.JPEG")
    jpeg = save(photo(64, 64, seed=1), str(work / "whole.jpg"))
    encoded = Path(jpeg).read_bytes()
    (root / "truncated.JPEG").write_bytes(encoded[: len(encoded) * 6 // 10])
    (root / "garbage.JPEG").write_bytes(b"this is not an image\n" * 20)
    (root / "empty.JPEG").write_bytes(b"")
    save(photo(40, 30, seed=2), str(root / "png.JPEG"), "PNG")
    photo(30, 40, seed=3).convert("CMYK").save(root / "cmyk.JPEG", "JPEG")

    out: Dict[str, Path] = {"root": root, "config": write_config(work / "quick.yaml")}
    labelled = [f"{name} {i % 10}\n" for i, name in enumerate(good)]

    def write_list(name: str, last: str) -> None:
        out[name] = work / f"list-{name}"
        out[name].write_text("".join(labelled) + last)

    for kind in ("truncated", "garbage", "empty"):
        write_list(kind, f"{kind}.JPEG 3\n")
    write_list("missing", "missing.JPEG 3\n")
    write_list("label", "good_0.JPEG 10\n")
    out["odd"] = work / "list-odd"
    out["odd"].write_text("".join(labelled[:6]) + "png.JPEG 1\ncmyk.JPEG 2\n")
    out["weights"] = make_weight_file(work / "mnv3.h5", ARCH, num_classes=10, size=32)
    whole = out["weights"].read_bytes()
    out["truncated_h5"] = work / "truncated.h5"
    out["truncated_h5"].write_bytes(whole[: len(whole) // 2])
    out["malformed_yaml"] = work / "malformed.yaml"
    out["malformed_yaml"].write_text("epochs: [1, 2\nmomentum: 0.9\n")
    out["unknown_key"] = work / "unknown-key.yaml"
    out["unknown_key"].write_text(yaml.safe_dump({"momentumm": 0.9}))
    out["mixup"] = write_config(work / "mixup.yaml", mixup=0.2)
    return out


def _train(bad: Dict[str, Path], work: Path, case: str, list_name: str = "odd",
           *extra: str, config: str = "config", arch: str = ARCH, batch: int = 8) -> List[str]:
    return ["train.py", "-a", arch, "--num-classes", "10", "--spatial-size", "32",
            "-b", str(batch), "-C", str(bad[config]), "-T", str(bad["root"]),
            "--train-list", str(bad[list_name]), "-v", "0", "-e", "1",
            "--dali-num-threads", "1", "-m", str(work / f"bad-{case}"), *extra]


def _validation(bad: Dict[str, Path], work: Path, list_name: str, weights: str = "weights",
                arch: str = ARCH) -> List[str]:
    return ["validation.py", str(bad[weights]), "-a", arch, "--spatial-size", "32",
            "-V", str(bad["root"]), "--val-list", str(bad[list_name]), "-b", "8",
            "--dali-num-threads", "1", "--no-progress", "-M", str(work / "bad-val-monitor")]


def _infer(bad: Dict[str, Path], image: str, weights: str = "weights",
           arch: str = ARCH) -> List[str]:
    return ["infer.py", *[str(bad["root"] / name) for name in image.split()], str(bad[weights]),
            "-a", arch, "--spatial-size", "32"]


def _class_tree(work: Path) -> Path:
    """Two class folders for create_input_files.py, one truncated and one empty image."""
    tree = work / "tree"
    for name in ("cat", "dog"):
        for i in range(3):
            save(photo(24, 20, seed=i), str(tree / name / f"{name}_{i}.JPEG"))
    whole = (tree / "cat" / "cat_0.JPEG").read_bytes()
    (tree / "cat" / "cat_0.JPEG").write_bytes(whole[: len(whole) // 2])
    (tree / "dog" / "dog_0.JPEG").write_bytes(b"")
    return tree


# (id, builds the command from (bad, work), expected status, parts of the one error line,
#  or for status 0 parts of the output). `{root}`, `{list}`, `{weights}`... are filled in.
BAD_INPUTS = [
    ("train-truncated-jpeg", lambda b, w: _train(b, w, "t", "truncated"), 2,
     ["cannot decode {root}/truncated.JPEG (line 8 of {list:truncated})", "truncated"]),
    ("train-garbage-jpeg", lambda b, w: _train(b, w, "g", "garbage"), 2,
     ["cannot decode {root}/garbage.JPEG (line 8 of {list:garbage})", "not an image"]),
    ("train-zero-byte", lambda b, w: _train(b, w, "z", "empty"), 2,
     ["cannot decode {root}/empty.JPEG (line 8 of {list:empty}): empty file"]),
    ("train-missing-file", lambda b, w: _train(b, w, "m", "missing"), 2,
     ["{list:missing}:8: file not found: {root}/missing.JPEG"]),
    ("train-label-out-of-range", lambda b, w: _train(b, w, "l", "label"), 2,
     ["{list:label}:8: class id 10 out of range (0..9)"]),
    ("train-png-and-cmyk-named-jpeg", lambda b, w: _train(b, w, "ok", "odd"), 0,
     ["finished 1 epochs"]),
    ("train-weights-of-another-arch", lambda b, w: _train(
        b, w, "wa", "odd", "--model-load-path", str(b["weights"]), arch="mobilenet_v2"), 2,
     ["{weights}: does not fit mobilenet_v2"]),
    ("train-truncated-h5", lambda b, w: _train(b, w, "th", "odd", "--model-load-path",
                                               str(b["truncated_h5"])), 2,
     ["{truncated_h5}: not a readable NNabla parameter file"]),
    ("train-malformed-yaml", lambda b, w: _train(b, w, "y", config="malformed_yaml"), 2,
     ["{malformed_yaml}: malformed YAML at line 2"]),
    ("train-unknown-config-key", lambda b, w: _train(b, w, "k", config="unknown_key"), 2,
     ["{unknown_key}, line 1: unknown key 'momentumm'", "did you mean 'momentum'?"]),
    ("train-odd-batch-with-mixup",
     lambda b, w: _train(b, w, "mx", config="mixup", batch=7), 2,
     ["{mixup}: mixup and CutMix pair sample i with sample B-1-i and need an even "
      "--batch-size, got 7"]),
    ("validation-truncated-jpeg", lambda b, w: _validation(b, w, "truncated"), 2,
     ["cannot decode {root}/truncated.JPEG (line 8 of {list:truncated})"]),
    ("validation-garbage-jpeg", lambda b, w: _validation(b, w, "garbage"), 2,
     ["cannot decode {root}/garbage.JPEG (line 8 of {list:garbage})", "not an image"]),
    ("validation-zero-byte", lambda b, w: _validation(b, w, "empty"), 2,
     ["cannot decode {root}/empty.JPEG (line 8 of {list:empty}): empty file"]),
    ("validation-missing-file", lambda b, w: _validation(b, w, "missing"), 2,
     ["{list:missing}:8: file not found: {root}/missing.JPEG"]),
    ("validation-label-out-of-range", lambda b, w: _validation(b, w, "label"), 2,
     ["{list:label}:8: class id 10 out of range (0..9)"]),
    ("validation-png-and-cmyk-named-jpeg", lambda b, w: _validation(b, w, "odd"), 0,
     ["8 images: top-1 error"]),
    ("validation-weights-of-another-arch",
     lambda b, w: _validation(b, w, "odd", arch="mobilenet_v2"), 2,
     ["{weights}: does not fit mobilenet_v2"]),
    ("validation-truncated-h5", lambda b, w: _validation(b, w, "odd", weights="truncated_h5"), 2,
     ["{truncated_h5}: not a readable NNabla parameter file"]),
    ("infer-truncated-jpeg", lambda b, w: _infer(b, "truncated.JPEG"), 2,
     ["cannot decode {root}/truncated.JPEG: ", "truncated"]),
    ("infer-garbage-jpeg", lambda b, w: _infer(b, "garbage.JPEG"), 2,
     ["cannot read image {root}/garbage.JPEG: not an image"]),
    ("infer-zero-byte", lambda b, w: _infer(b, "empty.JPEG"), 2,
     ["cannot read image {root}/empty.JPEG: empty file"]),
    ("infer-missing-file", lambda b, w: _infer(b, "missing.JPEG"), 2,
     ["no such image or folder: {root}/missing.JPEG"]),
    ("infer-png-and-cmyk-named-jpeg", lambda b, w: _infer(b, "png.JPEG cmyk.JPEG"), 0,
     ["{root}/png.JPEG", "{root}/cmyk.JPEG", "1. "]),
    ("infer-weights-of-another-arch", lambda b, w: _infer(b, "good_0.JPEG",
                                                          arch="mobilenet_v2"), 2,
     ["{weights}: does not fit mobilenet_v2"]),
    ("infer-truncated-h5", lambda b, w: _infer(b, "good_0.JPEG", weights="truncated_h5"), 2,
     ["{truncated_h5}: not a readable NNabla parameter file"]),
    ("convert-truncated-h5",
     lambda b, w: ["convert_parameter_format.py", str(b["truncated_h5"]),
                   str(w / "converted.h5"), "-m", "nhwc"], 2,
     ["{truncated_h5}: not a readable NNabla parameter file"]),
    ("export-weights-of-another-arch",
     lambda b, w: ["export.py", str(b["weights"]), "-a", "mobilenet_v2", "--spatial-size", "32",
                   "-o", str(w / "exported.nnp")], 2,
     ["{weights}: does not fit mobilenet_v2"]),
    ("export-truncated-h5",
     lambda b, w: ["export.py", str(b["truncated_h5"]), "-a", ARCH, "--spatial-size", "32",
                   "-o", str(w / "exported.nnp")], 2,
     ["{truncated_h5}: not a readable NNabla parameter file"]),
    ("create-input-files-verify-broken-images",
     lambda b, w: ["create_input_files.py", "-T", str(_class_tree(w)), "--verify",
                   "--workers", "1", "--no-progress", "-o", str(w / "lists")], 0,
     ["unreadable: {tree}/cat/cat_0.JPEG: ", "unreadable: {tree}/dog/dog_0.JPEG: empty file",
      "left out 2 unreadable image(s)", "train: 4 images"]),
    ("create-input-files-missing-folder",
     lambda b, w: ["create_input_files.py", "-T", str(w / "no-such-folder"), "--no-progress",
                   "-o", str(w / "lists-missing")], 2,
     ["folder not found: {work}/no-such-folder"]),
]


def _fill(text: str, bad: Dict[str, Path], work: Path) -> str:
    def value(match: re.Match) -> str:
        key = match.group(1)
        if key.startswith("list:"):
            return str(bad[key[5:]])
        return {"root": str(bad["root"]), "work": str(work), "tree": str(work / "tree")}.get(
            key, str(bad.get(key, "")))

    return re.sub(r"\{([a-z_:0-9]+)\}", value, text)


@pytest.mark.parametrize("case,command,status,parts", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(case, command, status, parts, bad, work):
    before = set(work.iterdir())
    result = run(command(bad, work), work / "logs", case)
    expected = [_fill(part, bad, work) for part in parts]
    if status == 0:
        assert result.returncode == 0, result.stderr[-3000:]
        for part in expected:
            assert part in result.stdout + result.stderr, (part, result.stdout[-2000:])
        return
    one_error(result, *expected, status=status)
    if case.startswith("train-") and "jpeg" not in case and "zero-byte" not in case:
        assert "epoch 0" not in result.stderr  # refused before training started
    # nothing half-made: outputs of a failed run are absent or hold no partial file
    for path in set(work.iterdir()) - before:
        assert not leftovers(path) if path.is_dir() else not path.name.startswith(".tmp-")
    for output in ("converted.h5", "exported.nnp"):
        assert not (work / output).exists()
