"""plot_curves.py and utils/outputs/plots.py on monitor folders, and nnabla_cli on our series
files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chart_checks import assert_curves_drawn
from matplotlib.colors import to_hex
from PIL import Image

import plot_curves
from utils.eval.evaluation import EvaluationResult
from utils.outputs.monitor import MonitorSeries
from utils.outputs.plots import (
    CHARTS,
    chart_lines,
    draw_chart,
    plot_chart,
    plot_monitor,
    plot_runs,
    run_names,
)
from utils.outputs.sink import record_evaluation
from utils.process.run import run


@pytest.fixture
def monitor(tmp_path):
    """A monitor folder as training writes it: 6 epochs, validation every 2."""
    folder = tmp_path / "tmp.monitor.20250101000000"
    folder.mkdir()
    loss = MonitorSeries(str(folder), "Train-loss")
    error = MonitorSeries(str(folder), "Train-error")
    for epoch in range(6):
        loss.add(epoch, 6.9 - epoch)
        error.add(epoch, 0.99 - 0.1 * epoch)
    for epoch in (2, 4, 6):
        result = EvaluationResult(7 - epoch, 1 - 0.1 * epoch, 0.5 - 0.05 * epoch, 100, 1.0)
        record_evaluation(result, str(folder), epoch)
    return folder


def test_command_writes_loss_top1_and_top5_charts(monitor, tmp_path, capsys):
    out = tmp_path / "charts"
    assert plot_curves.main([str(monitor), "-o", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(out / n) for n in ("loss.png", "error.png", "top5-error.png")]
    for path in written:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (640, 400)
        assert_curves_drawn(path, curves=2)  # training and validation
    assert sorted(os.listdir(out)) == ["error.png", "loss.png", "top5-error.png"]  # no temp


def drawn(chart, directories, title="t"):
    """(label, x, y, colour, style) of each curve on the chart's figure, as matplotlib holds
    them."""
    axes = draw_chart(chart, [str(d) for d in directories], title).axes[0]
    return [(line.get_label(), tuple(line.get_xdata()), tuple(line.get_ydata()),
             to_hex(line.get_color()), line.get_linestyle()) for line in axes.get_lines()]


def test_each_chart_draws_every_series_point_by_point(monitor):
    """The figure's curves hold the series' numbers: training every epoch, validation every
    second, on the loss, top-1 and top-5 charts."""
    epochs, validated = (0, 1, 2, 3, 4, 5), (2, 4, 6)
    expected = {
        "loss.png": [(6.9 - e for e in epochs), (7 - e for e in validated)],
        "error.png": [(0.99 - 0.1 * e for e in epochs), (1 - 0.1 * e for e in validated)],
        "top5-error.png": [None, (0.5 - 0.05 * e for e in validated)],
    }
    for chart in CHARTS[:3]:
        curves = drawn(chart, [monitor], "run")
        want = [("training", epochs, expected[chart.file_name][0]),
                ("validation", validated, expected[chart.file_name][1])]
        want = [(label, x, tuple(y)) for label, x, y in want if y is not None]
        assert [(label, x) for label, x, *_ in curves] == [(label, x) for label, x, _ in want]
        for (_, _, y, *_), (label, _, values) in zip(curves, want):
            assert y == pytest.approx(values, rel=1e-5), (chart.file_name, label)
    assert draw_chart(CHARTS[3], [str(monitor)], "run") is None  # no iteration series


def test_several_runs_share_the_charts_a_colour_per_run_a_style_per_series(monitor, tmp_path,
                                                                          capsys):
    other = tmp_path / "mixup" / "tmp.monitor.20250101000000"  # the same name elsewhere
    other.mkdir(parents=True)
    MonitorSeries(str(other), "Train-error").add(0, 0.8)
    record_evaluation(EvaluationResult(3.0, 0.7, 0.4, 100, 1.0), str(other), 1)
    record_evaluation(EvaluationResult(3.0, 0.6, 0.3, 100, 1.0), str(other), 1,
                      part="Validation-EMA")
    error_chart = CHARTS[1]
    lines = chart_lines(error_chart, [str(monitor), str(other)])
    first, second = run_names([str(monitor), str(other)])
    assert first == str(monitor) and second == str(other)  # clashing names: whole paths
    assert [(line.label, line.color, line.style) for line in lines] == [
        (f"{first}: training", "C0", "--"), (f"{first}: validation", "C0", "-"),
        (f"{second}: training", "C1", "--"), (f"{second}: validation", "C1", "-"),
        (f"{second}: validation (EMA)", "C1", ":")]
    assert lines[1].epochs == (2, 4, 6) and lines[4].values == (0.6,)
    # One run keeps plain labels and matplotlib's own colours.
    assert [(line.label, line.color) for line in chart_lines(error_chart, [str(other)])] == [
        ("training", None), ("validation", None), ("validation (EMA)", None)]

    # The figure: the same curves, in those colours and styles, with the runs' numbers.
    assert drawn(error_chart, [monitor, other]) == [
        (f"{first}: training", (0, 1, 2, 3, 4, 5),
         tuple(pytest.approx(0.99 - 0.1 * e) for e in range(6)), "#1f77b4", "--"),
        (f"{first}: validation", (2, 4, 6), tuple(pytest.approx(1 - 0.1 * e) for e in (2, 4, 6)),
         "#1f77b4", "-"),
        (f"{second}: training", (0,), (0.8,), "#ff7f0e", "--"),
        (f"{second}: validation", (1,), (0.7,), "#ff7f0e", "-"),
        (f"{second}: validation (EMA)", (1,), (0.6,), "#ff7f0e", ":")]

    out = tmp_path / "compare"
    assert plot_curves.main([str(monitor), str(other), "-o", str(out)]) == 0
    assert capsys.readouterr().out.split() == [
        str(out / n) for n in ("loss.png", "error.png", "top5-error.png")]
    with pytest.raises(SystemExit) as e:
        plot_curves.main([str(monitor), str(other)])
    assert e.value.code == 2 and "give -o/--out-dir" in capsys.readouterr().err


def test_missing_series_are_left_out_and_torn_lines_ignored(tmp_path):
    (tmp_path / "Train-loss.series.txt").write_text("0 2.5\n1 2.0\n2 1.")
    assert plot_monitor(str(tmp_path)) == [str(tmp_path / "loss.png")]
    assert [curve[:3] for curve in drawn(CHARTS[0], [tmp_path])] == [
        ("training", (0, 1), (2.5, 2.0))]


def test_nothing_to_plot_is_an_error(tmp_path, capsys):
    assert plot_curves.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: no loss or error series in {tmp_path}\n"
    assert run(lambda: plot_curves.main([str(tmp_path / "nope")])) == 2
    assert capsys.readouterr().err == f"error: monitor folder not found: {tmp_path / 'nope'}\n"


def test_nnabla_cli_plot_series_reads_our_files(monitor, tmp_path):
    nnabla_cli = Path(sys.executable).parent / "nnabla_cli"
    if not nnabla_cli.exists():
        pytest.skip("nnabla_cli not installed beside this Python")
    out = tmp_path / "cli.png"
    subprocess.run(
        [str(nnabla_cli), "plot_series", "-x", "epoch", "-y", "loss", "-l", "training",
         "-l", "validation", "-o", str(out), str(monitor / "Train-loss.series.txt"),
         str(monitor / "Validation-loss.series.txt")],
        check=True, capture_output=True, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_a_quantitys_chart_holds_its_three_series_with_their_legend_labels():
    from utils.outputs.plots import Chart, _chart

    assert _chart("x.png", "the loss", "loss") == Chart("x.png", "the loss", (
        ("Train-loss", "training"), ("Validation-loss", "validation"),
        ("Validation-EMA-loss", "validation (EMA)")))


def test_clashing_run_names_become_their_paths(tmp_path):
    assert run_names(["a/x", "b/x/", "c/y"]) == ["a/x", "b/x", "y"]


def test_one_runs_lines_are_solid_with_markers_while_short(monitor, tmp_path):
    lines = chart_lines(CHARTS[0], [str(monitor)])
    assert [(line.label, line.style, line.color) for line in lines] == [
        ("training", "-", None), ("validation", "-", None)]
    curve = draw_chart(CHARTS[0], [str(monitor)], "t").axes[0].get_lines()[0]
    assert (curve.get_marker(), curve.get_markersize()) == ("o", 3)
    long = tmp_path / "long"
    long.mkdir()
    series = MonitorSeries(str(long), "Train-loss")
    for epoch in range(30):
        series.add(epoch, 1.0 / (epoch + 1))
    assert draw_chart(CHARTS[0], [str(long)], "t").axes[0].get_lines()[0].get_marker() == "None"


def test_a_chart_is_640_by_400_whatever_the_figure_dpi_setting(monitor, tmp_path):
    import matplotlib

    with matplotlib.rc_context({"figure.dpi": 50, "savefig.dpi": "figure"}):
        written = plot_monitor(str(monitor), str(tmp_path / "out"), CHARTS[:1])
    with Image.open(written[0]) as img:
        assert img.size == (640, 400)


def test_the_title_is_the_runs_name_or_runs_compared(monitor, tmp_path):
    """The PNG that plot_runs writes is the one drawn with that title, byte for byte."""
    other = tmp_path / "other"
    other.mkdir()
    MonitorSeries(str(other), "Train-loss").add(0, 0.8)
    for directories, title in (([monitor], monitor.name), ([monitor, other], "runs compared")):
        out, expected = tmp_path / f"out{len(directories)}", tmp_path / f"exp{len(directories)}"
        assert plot_runs([str(d) for d in directories], str(out), CHARTS[:1]) == [
            str(out / "loss.png")]
        plot_chart(CHARTS[0], [str(d) for d in directories], str(expected), title)
        expected_png = (expected / "loss.png").read_bytes()
        assert (out / "loss.png").read_bytes() == expected_png
        plot_chart(CHARTS[0], [str(d) for d in directories], str(expected), "another")
        assert (out / "loss.png").read_bytes() != (expected / "loss.png").read_bytes()


def test_one_runs_charts_go_where_asked_and_only_those_asked(monitor, tmp_path):
    out = tmp_path / "out"
    assert plot_monitor(str(monitor), str(out), CHARTS[1:2]) == [str(out / "error.png")]
    assert sorted(os.listdir(out)) == ["error.png"]
    assert not [n for n in os.listdir(monitor) if n.endswith(".png")]
