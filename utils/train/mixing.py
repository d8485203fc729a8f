"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) inside the training graph, with
the official example's pairing: each sample is mixed with its mirror in the batch (sample i
with sample B-1-i).

- Mixup: a ratio per sample from Beta(alpha, alpha) blends the two images and their one-hot
  targets (`lam * x + (1 - lam) * mirror`).
- CutMix: a box of the mirror image is pasted into each sample; the box's area fraction is
  drawn as 1 - Beta(alpha, alpha), its centre uniformly (clipped at the borders, as timm's
  `rand_bbox`), and the targets are weighted by the areas actually kept and pasted.
- Both on: each batch is a CutMix batch with probability `switch_prob` (timm's
  `mixup_switch_prob`), else a mixup batch.

The mixed targets go through the same soft-target loss (`utils.eval.losses`). Every draw comes from
one NumPy RandomState seeded, as in the official example, with MIXUP_SEED + rank, which also
draws once when the graph is built, so that the first training step uses the stream's second
draw; with CutMix off the draws are exactly the official ones. The stream's state is part of a
training checkpoint, so a resumed run mixes as the uninterrupted one would.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np

from ..recipe.config import DEFAULT_SWITCH_PROB

MIXUP_SEED = 726  # the official mixup RandomState seed is MIXUP_SEED + rank


def cutmix_boxes(lam: np.ndarray, height: int, width: int, rng: np.random.RandomState
                 ) -> np.ndarray:
    """(y0, y1, x0, x1) per sample: a box of about (1 - lam) of the image, centred uniformly
    and clipped at the borders."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = (cut * height).astype(int), (cut * width).astype(int)
    cy = rng.randint(0, height, size=lam.shape)
    cx = rng.randint(0, width, size=lam.shape)
    return np.stack([np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height),
                     np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)],
                    axis=1)


class BatchMixing:
    """Mixes a batch with its mirror in the graph: call `resample()` before every iteration.

    Without CutMix the image weight is `lam` (B, 1, 1, 1), one Beta draw per sample. With
    CutMix the image weight is a map `keep` (B, 1, H, W) or (B, H, W, 1) (the share of each
    pixel taken from the sample itself) and the targets' weight `lam` (B, 1, 1, 1) is its mean
    per sample. Score the error against the original labels. `rng`: the stream of the mixing
    this one replaces (the graph rebuilt at another resolution); it draws on from there.

    The map is computed in the graph from two small inputs, so that with `lam` only 6 numbers
    a sample cross to the device each step (it was built on the host and uploaded: 38.5 MB at
    batch 192, 224x224):
    `box` (B, 4), each sample's pasted box (y0, y1, x0, x1), empty in a mixup batch, and
    `outside` (B, 1, 1, 1), the weight of the pixels outside it: 1 in a CutMix batch, `lam`
    in a mixup one. `keep` is `outside` off the box and 0 on it (forward it to read it).
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, image_shape: Tuple[int, ...],
                 num_classes: int, channel_last: bool = False, seed: int = MIXUP_SEED,
                 switch_prob: float = DEFAULT_SWITCH_PROB,
                 rng: Optional[np.random.RandomState] = None):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not mixup_alpha + cutmix_alpha > 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0 and one > 0, got "
                             f"{mixup_alpha}, {cutmix_alpha}")
        batch_size = image_shape[0]
        if batch_size % 2:
            raise ValueError(f"mixup pairs sample i with sample B-1-i and needs an even batch "
                             f"size, got {batch_size}")
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob = (mixup_alpha, cutmix_alpha,
                                                                 switch_prob)
        self.batch_size, self.num_classes, self.channel_last = (batch_size, num_classes,
                                                                channel_last)
        self.height, self.width = image_shape[1:3] if channel_last else image_shape[2:4]
        self.rng = np.random.RandomState(seed) if rng is None else rng
        self.lam = nn.Variable((batch_size, 1, 1, 1), need_grad=False)
        self.box = self.outside = self.keep = None
        if cutmix_alpha > 0:
            self.box = nn.Variable((batch_size, 4), need_grad=False)
            self.outside = nn.Variable((batch_size, 1, 1, 1), need_grad=False)
            self.keep = self._keep_map()
        if rng is None:  # as the official graph does once when built: step 1 uses draw 2
            self.resample()

    def state_dict(self) -> Dict[str, Any]:
        """The random stream: its MT19937 key and [position, has_gauss, gauss]."""
        _, key, position, has_gauss, gauss = self.rng.get_state()
        return {"key": key, "position": [int(position), int(has_gauss), float(gauss)]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        position, has_gauss, gauss = state["position"]
        self.rng.set_state(("MT19937", np.asarray(state["key"], np.uint32), int(position),
                            int(has_gauss), float(gauss)))

    def resample(self) -> np.ndarray:
        """Draw the next batch's mixing into the inputs; return the targets' weights."""
        cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or self.rng.random_sample() < self.switch_prob)
        if not cutmix:
            lam = self.rng.beta(self.mixup_alpha, self.mixup_alpha, size=self.lam.shape)
            self.lam.d = lam
            if self.keep is not None:
                self.box.d, self.outside.d = 0, lam
            return self.lam.d
        lam = self.rng.beta(self.cutmix_alpha, self.cutmix_alpha, size=self.batch_size)
        boxes = cutmix_boxes(lam, self.height, self.width, self.rng)
        self.box.d, self.outside.d = boxes, 1
        # The share of pixels kept, in float32 as the mean of the float32 map was.
        pixels = self.height * self.width
        kept = pixels - (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
        self.lam.d = (kept.astype(np.float32) / np.float32(pixels)).reshape(self.lam.shape)
        return self.lam.d

    def unmix(self) -> None:
        """Leave the next batch as it is (batch-norm statistics of the plain images)."""
        self.lam.d = 1.0
        if self.keep is not None:
            self.box.d, self.outside.d = 0, 1

    def _keep_map(self) -> nn.Variable:
        """`outside` where a pixel is off its sample's box, 0 on it, in the batch's layout:
        the larger of `outside` off the box's rows and `outside` off its columns, so that
        only that last operation is of the map's size."""
        h, w, batch = self.height, self.width, self.batch_size
        rows = F.reshape(F.arange(0, h), (1, h, 1, 1) if self.channel_last else (1, 1, h, 1))
        cols = F.reshape(F.arange(0, w), (1, 1, w, 1) if self.channel_last else (1, 1, 1, w))
        y0, y1, x0, x1 = (F.reshape(bound, (batch, 1, 1, 1))
                          for bound in F.split(self.box, axis=1))
        off_rows = self.outside * (1 - F.greater_equal(rows, y0) * F.less(rows, y1))
        off_cols = self.outside * (1 - F.greater_equal(cols, x0) * F.less(cols, x1))
        return F.maximum2(off_rows, off_cols)

    def _lam_for(self, x: nn.Variable) -> nn.Variable:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"mixing built for batch {self.batch_size}, got {x.shape}")
        return F.reshape(self.lam, (self.batch_size,) + (1,) * (x.ndim - 1), inplace=False)

    def mix_inputs(self, x: nn.Variable) -> nn.Variable:
        """`w * x + (1 - w) * reversed(x)` over the batch axis, `w` the image weight."""
        weight = self._lam_for(x) if self.keep is None else self.keep
        return weight * x + (1 - weight) * F.flip(x, axes=[0])

    def mix_labels(self, label: nn.Variable) -> nn.Variable:
        """Soft targets (B, K) from class indices (B, 1), weighted like the images."""
        lam = self._lam_for(label)
        one_hot = F.one_hot(label, (self.num_classes,))
        return lam * one_hot + (1 - lam) * F.flip(one_hot, axes=[0])
