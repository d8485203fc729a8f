"""Outputs are checked before any work (issue 34, items 1 and 3): `benchmark.py -o` and
`export.py -o` refuse a folder and a user's file of another kind with one line naming -o,
keeping the file; replace an earlier output of their own kind, saying so; refuse an input
batch that cannot fit in memory before building anything; and print measured rows when the
CSV cannot be written."""
from __future__ import annotations

from pathlib import Path

import pytest
from eval_fixtures import error_lines, make_weight_file, run_script

import benchmark
from utils.process.atomic import check_output_file
from utils.process.errors import OutputError

SMALL = ["-a", "resnet18", "-b", "1", "--spatial-size", "32", "--warmup", "0",
         "--iterations", "1", "--no-train"]


def one_line(result) -> str:
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    return lines[0]


def test_the_rule_itself(tmp_path):
    mine = tmp_path / "mine.csv"
    mine.write_text("kept\n")
    ours = tmp_path / "ours.csv"
    ours.write_text("ours\n")
    is_ours = lambda path: Path(path).read_text() == "ours\n"  # noqa: E731
    assert check_output_file(str(tmp_path / "new.csv"), "-o", "ours", is_ours, "x.csv") is None
    assert check_output_file(str(ours), "-o", "ours", is_ours, "x.csv") == \
        f"{ours} exists (ours): replacing it"
    with pytest.raises(OutputError, match=r"^-o .*mine.csv exists and is not ours; it is kept"):
        check_output_file(str(mine), "-o", "ours", is_ours, "x.csv")
    with pytest.raises(OutputError, match=r"is a folder; name the file to write, e.g. .*/x.csv"):
        check_output_file(str(tmp_path), "-o", "ours", is_ours, "x.csv")
    with pytest.raises(OutputError, match=r"^cannot write to the -o folder .*mine.csv is a file"):
        check_output_file(str(mine / "sub.csv"), "-o", "ours", is_ours, "x.csv")
    assert mine.read_text() == "kept\n"


@pytest.mark.slow  # (runs the script)
def test_benchmark_refuses_a_folder_and_a_users_file_before_measuring(tmp_path):
    folder = run_script("benchmark.py", *SMALL, "-o", tmp_path)
    assert one_line(folder) == (f"error: -o {tmp_path} is a folder; name the file to write, "
                                f"e.g. {tmp_path}/benchmark.csv")
    assert "measured" not in folder.stderr
    for name, content in (("notes.txt", b"my notes\n"), ("weights.h5", b"\x89HDF\r\n\x1a\n")):
        users = tmp_path / name
        users.write_bytes(content)
        result = run_script("benchmark.py", *SMALL, "-o", users)
        assert one_line(result) == (f"error: -o {users} exists and is not a benchmark CSV; it "
                                    "is kept: remove it or choose another name")
        assert users.read_bytes() == content


@pytest.mark.slow  # (runs the script)
def test_benchmark_replaces_its_own_csv_and_says_so(tmp_path):
    out = tmp_path / "bench.csv"
    first = run_script("benchmark.py", *SMALL, "-o", out, check=True)
    assert "replacing" not in first.stderr
    before = out.read_text()
    second = run_script("benchmark.py", *SMALL, "-o", out, check=True)
    assert f"{out} exists (a benchmark CSV): replacing it" in second.stderr
    assert out.read_text().splitlines()[0] == before.splitlines()[0]
    assert out.read_text().splitlines()[1].startswith("resnet18,32,32,")


@pytest.mark.slow  # (runs the script)
def test_benchmark_refuses_an_input_batch_that_cannot_fit(tmp_path):
    result = run_script("benchmark.py", "-a", "resnet18", "-b", "64", "--spatial-size",
                        "100000", "-o", tmp_path / "b.csv")
    line = one_line(result)
    assert line.startswith("error: 64 input images of resnet18 (64 x 3 x 100000 x 100000) "
                           "need at least 7152.6 GiB as float32 pixels alone, more than the ")
    assert line.endswith("GiB of memory available: use a smaller -b or --spatial-size")


def test_measured_rows_are_printed_when_the_csv_cannot_be_written(tmp_path, capsys):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("")
    row = benchmark.Row("resnet18", 32, 32, 11_689_512, 37_000_000, 123.45, None, 1, 1, "NCHW",
                        "float", "cpu")
    with pytest.raises(OutputError, match=r"^cannot write -o .*/file/b.csv: .*the rows "
                                          "measured are printed above$"):
        benchmark.write_rows(str(in_the_way / "b.csv"), [row])
    printed = capsys.readouterr().out.splitlines()[-1].split()
    assert printed[:5] == ["resnet18", "32x32", "11.69", "0.037", "123.5"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weight_file(tmp_path_factory.mktemp("w") / "r18.h5", "resnet18")


@pytest.mark.slow  # (runs the script)
@pytest.mark.parametrize("name", ["keep.onnx", "keep.nnp"])
def test_export_keeps_a_file_that_is_not_a_model(weights, tmp_path, name):
    keep = tmp_path / name
    keep.write_text("not a model\n")
    result = run_script("export.py", weights, "-a", "resnet18", "--num-classes", "10",
                        "--spatial-size", "32", "-o", keep)
    kind = "an ONNX model" if name.endswith("onnx") else "an NNP model"
    assert one_line(result) == (f"error: -o {keep} exists and is not {kind}; it is kept: "
                                "remove it or choose another name")
    assert keep.read_text() == "not a model\n"


@pytest.mark.slow  # (runs the script)
def test_export_replaces_its_own_model_and_refuses_a_folder(weights, tmp_path):
    out = tmp_path / "m.nnp"
    args = [weights, "-a", "resnet18", "--num-classes", "10", "--spatial-size", "32"]
    run_script("export.py", *args, "-o", out, check=True)
    again = run_script("export.py", *args, "-o", out, check=True)
    assert f"{out} exists (an NNP model): replacing it" in again.stdout
    folder = tmp_path / "models.onnx"
    folder.mkdir()
    assert one_line(run_script("export.py", *args, "-o", folder)) == (
        f"error: -o {folder} is a folder; name the file to write, e.g. {folder}/model.onnx")


@pytest.mark.slow  # (runs the script)
def test_export_refuses_a_test_batch_that_cannot_fit(weights, tmp_path):
    result = run_script("export.py", weights, "-a", "resnet18", "--num-classes", "10",
                        "--spatial-size", "100000", "-b", "64", "-o", tmp_path / "m.nnp")
    assert one_line(result).startswith("error: -b 64 test images at 100000x100000 need at "
                                       "least 7152.6 GiB as float32 pixels alone")
    assert not (tmp_path / "m.nnp").exists()
