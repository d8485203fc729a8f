"""Exponential moving average of the weights, kept beside the trained ones.

The shadow copy lives in NNabla arrays on the training device (no host round trip per
step on a GPU), in float32 whatever the training precision: in float16 a decay of 0.9998
rounds to 1.0 and the average would stop moving. It averages every parameter, batch-norm
statistics included, so swapping it in gives a complete network to validate and save.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Mapping, Optional

import nnabla as nn
import numpy as np

from ..process.context import float_context


class WeightEma:
    """shadow <- decay * shadow + (1 - decay) * weights, after every update."""

    def __init__(self, params: Mapping[str, nn.Variable], decay: float,
                 float_ctx: Optional[Any] = None):
        """`float_ctx`: where the shadow is kept and updated, a float32 context (default: the
        current context's backend in float32)."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._ctx = float_context(nn.get_current_context()) if float_ctx is None else float_ctx
        self._params = dict(params)
        self._shadow: Dict[str, nn.NdArray] = {}
        with nn.context_scope(self._ctx):
            for name, v in self._params.items():
                s = nn.NdArray(v.shape)
                s.copy_from(v.data)
                self._shadow[name] = s

    def update(self) -> None:
        with nn.context_scope(self._ctx):
            for name, v in self._params.items():
                s = self._shadow[name]
                s *= self.decay
                s += v.data * (1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the network holds the averaged weights; the trained ones after."""
        saved = {name: v.d.copy() for name, v in self._params.items()}
        with nn.context_scope(self._ctx):  # a half copy (cuDNN's) would round them
            for name, v in self._params.items():
                v.data.copy_from(self._shadow[name])
        try:
            yield
        finally:
            for name, v in self._params.items():
                v.d = saved[name]

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {name: s.data.copy() for name, s in self._shadow.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[0]}")
        for name, s in self._shadow.items():
            s.data = np.asarray(state[name])
