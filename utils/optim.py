"""SGD with momentum, the official weight-decay rule, and static or dynamic loss scaling.

One training step with `MomentumSolver`:

    solver.zero_grad()
    loss.backward(solver.loss_scale)       # gradients of loss * loss_scale
    all-reduce [p.grad for p in solver.parameters()], dividing by the number of workers
    solver.set_learning_rate(solver_learning_rate(lr_per_example, global_batch))
    solver.update()                        # unscale, decay, momentum step (or skip)

Weight decay applies to every trainable parameter except batch-norm gamma and beta (names
ending in `/gamma` or `/beta`); convolution and affine biases, including the SE and
classifier biases, are decayed like the official example. The update is nnabla's
`Momentum`: v = momentum * v + lr * (g + weight_decay * w); w = w - v.

NNabla's `DynamicLossScalingUpdater` runs forward, backward and update in one call; ours is
needed because the gradient all-reduce must sit between backward and update, the two
weight-decay groups need two solvers, and the scale and its counters belong in a
checkpoint.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import nnabla as nn
import nnabla.solvers as S
import numpy as np

NO_DECAY_SUFFIXES: Tuple[str, ...] = ("/gamma", "/beta")


def is_decayed(name: str) -> bool:
    """Whether weight decay applies to the parameter `name` (not to batch-norm gamma/beta)."""
    return not name.endswith(NO_DECAY_SUFFIXES)


class MomentumSolver:
    """Momentum SGD over the trainable parameters, with loss scaling and checkpointable state.

    `params` is name -> Variable in a fixed order (e.g. `nn.get_parameters()`, the network's
    creation order); parameters with `need_grad=False` (batch-norm statistics) are ignored.
    The same order is used by `parameters()` for the gradient all-reduce, so every worker
    must build the same network.

    Loss scaling: the caller backpropagates `loss * loss_scale`; `update()` divides the
    gradients by it first, so the step equals the unscaled one. Static scaling keeps
    `loss_scale` fixed and never checks gradients (the official behaviour). Dynamic scaling
    starts at `loss_scale`; if any gradient is inf or nan the update is skipped and the
    scale halved (not below `min_loss_scale`); after `growth_interval` consecutive good
    updates it doubles.
    """

    def __init__(
        self,
        params: Mapping[str, nn.Variable],
        momentum: float,
        weight_decay: float,
        learning_rate: float = 0.0,
        loss_scale: float = 1.0,
        dynamic_loss_scaling: bool = False,
        growth_interval: int = 2000,
        min_loss_scale: float = 1.0,
    ):
        if loss_scale <= 0:
            raise ValueError(f"loss_scale must be > 0, got {loss_scale}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")
        self._params: Dict[str, nn.Variable] = {
            name: var for name, var in params.items() if var.need_grad
        }
        if not self._params:
            raise ValueError("no trainable parameters to optimise")
        self.weight_decay = weight_decay
        self.dynamic_loss_scaling = dynamic_loss_scaling
        self.growth_interval = growth_interval
        self.min_loss_scale = min_loss_scale
        self.loss_scale = float(loss_scale)
        self.good_steps = 0  # consecutive finite updates since the last scale change
        self.steps = 0  # updates applied
        self.skipped_steps = 0  # updates skipped because of inf/nan gradients
        self._lr = learning_rate
        # Two nnabla solvers, as weight decay is applied per solver.
        self._groups: List[Tuple[bool, S.Solver]] = []
        for decayed in (True, False):
            group = {n: v for n, v in self._params.items() if is_decayed(n) == decayed}
            if group:
                solver = S.Momentum(learning_rate, momentum)
                solver.set_parameters(group)
                self._groups.append((decayed, solver))

    def parameters(self) -> List[nn.Variable]:
        """Trainable parameters in a fixed order (the order given), for the all-reduce."""
        return list(self._params.values())

    def set_learning_rate(self, learning_rate: float) -> None:
        """Step size for mean gradients: `utils.lr_schedules.solver_learning_rate`."""
        self._lr = learning_rate
        for _, solver in self._groups:
            solver.set_learning_rate(learning_rate)

    @property
    def learning_rate(self) -> float:
        return self._lr

    def zero_grad(self) -> None:
        """Clear the gradients (nnabla accumulates parameter gradients over backward calls)."""
        for _, solver in self._groups:
            solver.zero_grad()

    def _gradients_finite(self) -> bool:
        return not any(solver.check_inf_or_nan_grad() for _, solver in self._groups)

    def update(self) -> bool:
        """Apply one step from the current gradients; False when skipped (dynamic scaling)."""
        if self.dynamic_loss_scaling and not self._gradients_finite():
            self.skipped_steps += 1
            self.good_steps = 0
            self.loss_scale = max(self.min_loss_scale, self.loss_scale / 2)
            return False
        for decayed, solver in self._groups:
            if self.loss_scale != 1.0:
                solver.scale_grad(1.0 / self.loss_scale)
            if decayed and self.weight_decay:
                solver.weight_decay(self.weight_decay)
            solver.update()
        self.steps += 1
        if self.dynamic_loss_scaling:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.loss_scale *= 2
                self.good_steps = 0
        return True

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Solver state as a flat dict of numpy arrays (savable with `np.savez`).

        Keys: `momentum/<param name>` (velocity), `t/<param name>` (nnabla's per-parameter
        update counter) and the scalars `loss_scale`, `good_steps`, `steps`, `skipped_steps`.
        """
        state: Dict[str, np.ndarray] = {}
        for _, solver in self._groups:
            for name, solver_state in solver.get_states().items():
                state[f"momentum/{name}"] = np.array(solver_state.pstate["m"].d, copy=True)
                state[f"t/{name}"] = np.array(solver_state.t, dtype=np.int64)
        state["loss_scale"] = np.array(self.loss_scale, dtype=np.float64)
        for key in ("good_steps", "steps", "skipped_steps"):
            state[key] = np.array(getattr(self, key), dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `state_dict()` output; the parameter names and shapes must match."""
        expected = {f"{kind}/{name}" for name in self._params for kind in ("momentum", "t")}
        expected |= {"loss_scale", "good_steps", "steps", "skipped_steps"}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                "solver state does not match the parameters: "
                f"missing {_preview(missing)}, unexpected {_preview(unexpected)}"
            )
        for _, solver in self._groups:
            states = solver.get_states()
            for name, solver_state in states.items():
                velocity = solver_state.pstate["m"]
                value = np.asarray(state[f"momentum/{name}"])
                if value.shape != velocity.shape:
                    raise ValueError(
                        f"solver state 'momentum/{name}' has shape {value.shape}, "
                        f"the parameter has {velocity.shape}"
                    )
                velocity.d = value
                solver_state.t = int(state[f"t/{name}"])
            solver.set_states(states)
        self.loss_scale = float(state["loss_scale"])
        self.good_steps = int(state["good_steps"])
        self.steps = int(state["steps"])
        self.skipped_steps = int(state["skipped_steps"])


def _preview(names: List[str], limit: int = 3) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
