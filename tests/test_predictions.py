"""infer.py --output (issue 33 item 5): one row per image in input order, batched through the
data pipeline, the same under mpirun; an unreadable image is a row with its error."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
from eval_fixtures import DEMO, error_lines, make_weight_file, run_script

pytestmark = pytest.mark.slow  # (infer.py runs)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven demo images and a file named .jpg that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(1, 8):
        shutil.copy(DEMO / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", folder / f"p{i}.jpg")
    (folder / "p4b.jpg").write_bytes(b"not an image at all")
    weights = make_weight_file(tmp_path_factory.mktemp("w") / "r18.h5", "resnet18")
    return folder, weights


def infer(photos, *extra, ranks=0, check=True):
    folder, weights = photos
    return run_script("infer.py", folder, weights, "-a", "resnet18", "--num-classes", "10",
                      "--spatial-size", "32", "-b", "3", "-k", "3", *extra, mpi_ranks=ranks,
                      check=check)


def test_a_row_per_image_in_order_the_unreadable_one_with_its_error(photos, tmp_path):
    out = tmp_path / "p.csv"
    done = infer(photos, "--output", out)
    assert done.stdout.strip() == (f"wrote {out}: 7 images classified, 1 unreadable (their "
                                   "rows say why)")
    rows = list(csv.DictReader(out.open()))
    assert [r["image"].rsplit("/", 1)[1] for r in rows] == [
        "p1.jpg", "p2.jpg", "p3.jpg", "p4.jpg", "p4b.jpg", "p5.jpg", "p6.jpg", "p7.jpg"]
    bad = rows[4]
    assert bad["error"].startswith(f"cannot read image {photos[0]}/p4b.jpg")
    assert bad["class_1"] == ""
    # The readable ones: what the stdout mode (all images readable) gives for them.
    shown = json.loads(run_script("infer.py", *[photos[0] / f"p{i}.jpg" for i in range(1, 8)],
                                  photos[1], "-a", "resnet18", "--num-classes", "10",
                                  "--spatial-size", "32", "-b", "3", "-k", "3", "--json",
                                  check=True).stdout)["predictions"]
    good = [r for r in rows if not r["error"]]
    for row, prediction in zip(good, shown):
        assert [int(row[f"class_{k}"]) for k in (1, 2, 3)] == \
            [g["class"] for g in prediction["top_k"]]
        assert [float(row[f"probability_{k}"]) for k in (1, 2, 3)] == pytest.approx(
            [g["probability"] for g in prediction["top_k"]], abs=1e-5)


def test_two_ranks_write_the_same_file_as_one(photos, tmp_path):
    infer(photos, "--output", tmp_path / "one.csv")
    infer(photos, "--output", tmp_path / "two.csv", ranks=2)
    one, two = (list(csv.DictReader((tmp_path / n).open())) for n in ("one.csv", "two.csv"))
    assert [r["image"] for r in two] == [r["image"] for r in one]
    for a, b in zip(one, two):
        assert [a[f"class_{k}"] for k in (1, 2, 3)] == [b[f"class_{k}"] for k in (1, 2, 3)]
        assert a["error"] == b["error"]


def test_json_and_the_outputs_refused(photos, tmp_path):
    out = tmp_path / "p.json"
    infer(photos, "--output", out)
    data = json.loads(out.read_text())
    assert len(data["predictions"]) == 8 and "error" in data["predictions"][4]
    assert len(data["predictions"][0]["top_k"]) == 3
    again = infer(photos, "--output", out)
    assert f"{out} exists (a predictions file): replacing it" in again.stderr
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}\n')
    refused = infer(photos, "--output", notes, check=False)
    assert refused.returncode == 2 and error_lines(refused.stderr) == [
        f"error: --output {notes} exists and is not a predictions file; it is kept: remove "
        "it or choose another name"]
    assert notes.read_text() == '{"mine": 1}\n'
    text = infer(photos, "--output", tmp_path / "p.txt", check=False)
    assert error_lines(text.stderr) == [f"error: --output {tmp_path}/p.txt: name a .csv or a "
                                        ".json file"]
