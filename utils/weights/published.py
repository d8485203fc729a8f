"""The weight files the official example published, so that the scripts can help with them.

Knowing a published file by its name lets a missing file's error say where to download it, a
file loaded with the wrong `-a` say which architecture it is for, and the SENet authors'
weights warn when they are run without the normalisation they were trained with. The errors
are the top-1 validation errors (%) as published by the nnabla-examples authors; the table
of docs/evaluation.md is tested against this list.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

BASE_URL = "https://nnabla.org/pretrained-models/nnabla-examples/ilsvrc2012/"


@dataclass(frozen=True)
class PublishedWeights:
    file: str
    arch: str
    channel_last: bool  # NHWC with a 4-channel first convolution (mixed-precision training)
    recipe: str  # the cfg/ recipe, or "" for the SENet authors' converted weights
    top1_error: float
    norm: str = "default"

    @property
    def url(self) -> str:
        return BASE_URL + self.file

    def describe(self) -> str:
        trained = f"{self.recipe} recipe" if self.recipe else "the SENet authors' weights"
        return (f"published {self.arch} weights ({trained}; top-1 error {self.top1_error:g} % "
                f"as published)")


def _family(arch: str, channel_last: bool, runs: Dict[str, float], norm: str = "default",
            ) -> List[PublishedWeights]:
    return [PublishedWeights(f, arch, channel_last, recipe, error, norm)
            for f, (recipe, error) in runs.items()]


_ALL = [
    *_family("resnet18", True, {"rn18-nhwc.h5": ("step90", 29.42),
                                "rn18-nhwc_mixup250.h5": ("mixup250", 28.25)}),
    *_family("resnet34", True, {"rn34-nhwc.h5": ("step90", 26.44),
                                "rn34-nhwc_mixup250.h5": ("mixup250", 24.73)}),
    *_family("resnet50", False, {"rn50-nchw.h5": ("step90", 23.27)}),
    *_family("resnet50", True, {"rn50-nhwc.h5": ("step90", 23.28),
                                "rn50-nhwc_cos90.h5": ("cos90", 22.98),
                                "rn50-nhwc_mixup250.h5": ("mixup250", 21.57)}),
    *_family("resnet101", True, {"rn101-nhwc.h5": ("step90", 21.89)}),
    *_family("resnet152", True, {"rn152-nhwc_cos90.h5": ("cos90", 21.06)}),
    *_family("resnext50", True, {"resnext50_nhwc.h5": ("step90", 22.46),
                                 "resnext50_nhwc_cos90.h5": ("cos90", 22.41),
                                 "resnext50_nhwc_mixup250.h5": ("mixup250", 20.98)}),
    *_family("se_resnet50", True, {"se_resnet50_nhwc.h5": ("step90", 22.77),
                                   "se_resnet50_nhwc_cos90.h5": ("cos90", 22.58),
                                   "se_resnet50_nhwc_mixup250.h5": ("mixup250", 21.19)}),
    *_family("se_resnext50", True, {"se_resnext50_nhwc.h5": ("step90", 21.72),
                                    "se_resnext50_nhwc_cos90.h5": ("cos90", 21.53),
                                    "se_resnext50_nhwc_mixup250.h5": ("mixup250", 20.08)}),
    *_family("se_resnet50", False, {"se_resnet50_by_author.h5": ("", 22.42)}, "senet_author"),
    *_family("se_resnext50", False, {"se_resnext50_by_author.h5": ("", 20.98)}, "senet_author"),
    *_family("mobilenet_v1", False, {"mbnv1_nchw_cos90.h5": ("cos90", 27.77)}),
    *_family("mobilenet_v1", True, {"mbnv1_nhwc_cos90.h5": ("cos90", 27.63)}),
    *_family("mobilenet_v2", False, {"mbnv2_nchw_cos90.h5": ("cos90", 28.06)}),
    *_family("mobilenet_v2", True, {"mbnv2_nhwc_cos90.h5": ("cos90", 28.32),
                                    "mbnv2_nhwc_mixup350.h5": ("mixup350", 27.27)}),
    *_family("mobilenet_v3_large", False, {"mbnv3_large_nchw_cos90.v2.h5": ("cos90", 26.11)}),
    *_family("mobilenet_v3_large", True, {"mbnv3_large_nhwc_cos90.v2.h5": ("cos90", 26.09),
                                          "mbnv3_large_nhwc_mixup350.h5": ("mixup350", 24.87)}),
    *_family("mobilenet_v3_small", False, {"mbnv3_small_nchw_cos90.v2.h5": ("cos90", 33.87)}),
    *_family("mobilenet_v3_small", True, {"mbnv3_small_nhwc_cos90.v2.h5": ("cos90", 33.49),
                                          "mbnv3_small_nhwc_mixup350.h5": ("mixup350", 32.91)}),
    # The "340" in two EfficientNet names is upstream's spelling; the recipes ran 350 epochs.
    *_family("efficientnet_b0", True, {"efficientnet_b0_nhwc_cos340.h5": ("cos350", 23.76),
                                       "efficientnet_b0_nhwc_mixup350.h5": ("mixup350", 23.73)}),
    *_family("efficientnet_b1", True, {"efficientnet_b1_nhwc_cos350.h5": ("cos350", 22.11),
                                       "efficientnet_b1_nhwc_mixup350.h5": ("mixup350", 21.91)}),
    *_family("efficientnet_b2", True, {"efficientnet_b2_nhwc_cos350.h5": ("cos350", 21.27),
                                       "efficientnet_b2_nhwc_mixup340.h5": ("mixup350", 20.92)}),
    *_family("efficientnet_b3", True, {"efficientnet_b3_nhwc_cos350.h5": ("cos350", 20.08),
                                       "efficientnet_b3_nhwc_mixup350.h5": ("mixup350", 19.42)}),
]
PUBLISHED: Dict[str, PublishedWeights] = {w.file: w for w in _ALL}


def published(path: str) -> Optional[PublishedWeights]:
    """The published file `path` names (by its file name), or None."""
    return PUBLISHED.get(os.path.basename(path))


def resembling(path: str) -> Optional[str]:
    """The published file name that `path`'s name looks like a misspelling of, or None."""
    name = os.path.basename(path)
    if name in PUBLISHED:
        return None
    close = difflib.get_close_matches(name, PUBLISHED, n=5, cutoff=0.85)
    # Of equally close names, the one that shares the longest start: the network is seldom
    # what is misspelt (efficientnet_b0_nhwc_cos350.h5 is b0's cos340, not b3's cos350).
    close = sorted(close, key=lambda f: -len(os.path.commonprefix([f, name])))[:1]
    if not close:  # case and separators: rn50_NHWC_cos90.h5
        canonical = {_canonical(f): f for f in PUBLISHED}
        close = [canonical[_canonical(name)]] if _canonical(name) in canonical else []
    return close[0] if close else None


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def did_you_mean(path: str) -> str:
    """'; did you mean the published <name>?' for a misspelt published name, else ''."""
    close = resembling(path)
    return f"; did you mean the published {close}?" if close else ""


def where_to_get(path: str) -> str:
    """For a missing file: where to download it, when it is a published one, or the published
    name it resembles ('' if neither)."""
    known = published(path)
    return (f"; it is published: download {known.url}, or give just its name to have it "
            "downloaded into the cache" if known else did_you_mean(path))


def arch_hint(path: str, arch: str) -> str:
    """For a file that does not fit `arch`: the architecture its published name is for."""
    known = published(path)
    if known is None or known.arch == arch:
        return ""
    return f" ({os.path.basename(path)} is the published {known.arch} file: use -a {known.arch})"


def norm_warning(path: str, norm: str) -> Optional[str]:
    """A warning when a published file is run with another input normalisation than its own."""
    known = published(path)
    if known is None or known.norm == norm:
        return None
    return (f"warning: {os.path.basename(path)} was trained with -n {known.norm} "
            f"normalisation; with -n {norm} its predictions are off")
