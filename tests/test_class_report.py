"""The confusion matrix as drawn: its cells hold each true class's fractions of top-1
predictions (classes without images left out), and confusion.png (and TensorBoard's image)
shows those fractions in the colour map's shades, so an empty or wrong matrix fails here,
not only a missing file."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from utils.eval.per_class import ClassCounts
from utils.outputs.class_report import confusion_figure, plot_confusion
from utils.outputs.tensorboard import figure_pixels

# 4 classes; class 2 has no images. Rows: true class, columns: top-1 prediction.
CONFUSION = np.array([[3, 1, 0, 0],
                      [0, 2, 0, 2],
                      [0, 0, 0, 0],
                      [1, 0, 0, 0]])
# The rows of classes 0, 1 and 3 as fractions of their images (4, 4 and 1), typed out.
SHOWN = np.array([[0.75, 0.25, 0.0],
                  [0.0, 0.5, 0.5],
                  [1.0, 0.0, 0.0]])
NAMES = ["tench, Tinca tinca", "goldfish", "shark", "hen"]


def counts() -> ClassCounts:
    return ClassCounts(CONFUSION.copy(), np.array([4, 4, 0, 1]))


def test_the_cells_are_each_classs_fractions_without_the_empty_class():
    figure = confusion_figure(counts(), NAMES)
    axes = figure.axes[0]
    (image,) = axes.get_images()
    np.testing.assert_allclose(np.asarray(image.get_array()), SHOWN)
    assert image.get_clim() == (0, 1)
    assert [t.get_text() for t in axes.get_yticklabels()] == ["tench", "goldfish", "hen"]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["tench", "goldfish", "hen"]


def test_confusion_png_shows_each_fraction_in_its_cell(tmp_path):
    path = plot_confusion(counts(), NAMES, str(tmp_path))
    assert path == str(tmp_path / "confusion.png")
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB")).astype(int)
    # Where each cell's centre lands: the same figure laid out by the same canvas.
    figure = confusion_figure(counts(), NAMES)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    assert pixels.shape[:2] == canvas.get_width_height()[::-1]
    # TensorBoard's validation/confusion image is these pixels too.
    assert np.array_equal(figure_pixels(figure), pixels)
    to_pixels = figure.axes[0].transData
    blues = colormaps["Blues"]
    for row in range(3):
        for column in range(3):
            x, y = to_pixels.transform((column, row))
            seen = pixels[pixels.shape[0] - int(round(y)), int(round(x))]
            expected = np.round(np.asarray(blues(SHOWN[row, column])[:3]) * 255)
            assert np.abs(seen - expected).max() <= 2, (row, column, seen, expected)


def test_no_matrix_above_the_limit_of_classes(tmp_path):
    many = ClassCounts(np.eye(101, dtype=np.int64), np.ones(101, np.int64))
    assert confusion_figure(many, [None] * 101) is None
    assert plot_confusion(many, [None] * 101, str(tmp_path)) is None
    assert not (tmp_path / "confusion.png").exists()
