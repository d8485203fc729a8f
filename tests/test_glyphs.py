"""Class names in a script matplotlib's default font cannot draw (issue 34 item 6): the
confusion matrix labels such a class by its id, quietly, instead of empty boxes under a
dozen `Glyph ... missing from font` warnings."""
from __future__ import annotations

import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from utils.eval.per_class import ClassCounts
from utils.outputs.class_report import confusion_figure, drawable


def test_latin_names_are_drawn_and_cjk_ones_are_not():
    assert drawable("tench, Tinca tinca") and drawable("Kuvasz ä é")
    assert not drawable("金魚") and not drawable("goldfish 金魚")


def test_the_confusion_matrix_draws_ids_for_names_it_cannot_draw_without_a_warning(tmp_path):
    counts = ClassCounts(np.array([[2, 1, 0], [0, 3, 0], [1, 0, 1]]), np.array([3, 3, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, e.g. a missing glyph, fails the test
        figure = confusion_figure(counts, ["金魚", "tench, Tinca tinca", "コイ"])
        FigureCanvasAgg(figure).print_png(str(tmp_path / "confusion.png"))
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["0", "tench", "2"]
