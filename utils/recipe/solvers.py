"""The recipe's solver (`solver:` section) over NNabla's own solver classes, with the weight-
decay groups, gradient clipping by global norm, static or dynamic loss scaling, and
checkpointable state.

One training step with `Solver`:

    solver.zero_grad()
    loss.backward(solver.loss_scale)       # gradients of loss * loss_scale
    all-reduce [p.grad for p in solver.parameters()], dividing by the number of workers
    solver.set_learning_rate(solver_learning_rate(lr_per_example, global_batch))
    solver.update()                        # unscale, clip, decay, step (or skip)

The parameters are split in two groups, each with its own NNabla solver, as NNabla applies
weight decay per solver: those `exclude_from_decay` names (by default batch-norm gamma and
beta, names ending in `/gamma` or `/beta`; convolution and affine biases are decayed like
the official example) and the others. The default, `momentum`, is the official update
unchanged: nnabla's `Momentum`, v = momentum * v + lr * (g + weight_decay * w); w = w - v.
The update rules of the others, and how NNabla's code relates to their papers:

- nesterov: nnabla's `Nesterov`, v' = m v - lr (g + wd w); w += -m v + (1 + m) v' (Bengio
  et al. 2013, eq. 7, the form that keeps the look-ahead point as the parameters).
- adamw: nnabla's `AdamW` (Loshchilov & Hutter 2019, algorithm 2). NNabla decays by
  (alpha_t / alpha_0) * wd * w, alpha_0 being the rate it was built with; built with
  `base_lr` this is the paper's eta_t * lambda with the schedule multiplier
  eta_t = lr_t / base_lr (PyTorch's AdamW decays by lr_t * wd instead: its weight_decay is
  the paper's lambda / base_lr). NNabla adds eps to sqrt(v) before the bias correction, which
  is the paper's update with eps / sqrt(1 - beta2^t) in place of eps (the difference is below
  float32 rounding unless sqrt(v_hat) is within a few eps).
- lamb: nnabla's `Lamb` with bias correction (You et al. 2020, algorithm 2): r = m_hat /
  (sqrt(v_hat) + eps) + wd w; w -= lr * phi(|w|) / |r| * r, phi = clip(., gamma_l, gamma_u).
- lars: nnabla's `Lars` (You et al. 2017, algorithm 1): local rate coefficient * |w| /
  (|g| + wd |w|); v = m v + lr * local * (g + wd w); w -= v. NNabla steps the global rate
  when |w| < eps, where the paper's local rate would be 0.

With `adapt_excluded` false (the default), the parameters excluded from decay take the plain
step of lamb (nnabla's `Adam`, whose eps sits as AdamW's) or lars (nnabla's `Momentum`)
without the trust ratio, as the published implementations do: with the paper's trust ratio
a zero-initialised bias or beta (|w| = 0) never moves.

NNabla's `DynamicLossScalingUpdater` runs forward, backward and update in one call; ours is
needed because the gradient all-reduce must sit between backward and update, the two
weight-decay groups need two solvers, and the scale and its counters belong in a
checkpoint.

The `solver` section of the recipes is declared here too, one section class per type (`type`
chooses it, as `lr_scheduler.type` does), the keys several types share declared once. The
top-level `momentum` and `weight_decay` keys stay where the official layout has them:
`momentum` is the momentum of momentum, nesterov and lars, `weight_decay` the decay
coefficient of every type, coupled (added to the gradient) for momentum and nesterov,
decoupled for adamw and lamb, inside the trust ratio for lars, each as its paper defines it.

The learning rate: for momentum and nesterov `lr_scheduler.args.base_lr` is per example and
the step size is it times the global batch (the linear scaling rule of SGD, as today). For
adamw, lamb and lars it is the step size itself: their steps are normalised (per coordinate,
or per layer by the trust ratio), so the gradient's batch-size dependence that the linear
rule compensates is gone, and their published rates are absolute ones for a stated batch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Set, Tuple, Union

import nnabla as nn
import nnabla.solvers as S
import numpy as np
from pydantic import Field, model_validator
from typing_extensions import Annotated, Literal

from .fields import Flag, Number, recipe, rule_error

ExcludeFromDecay = Literal["batchnorm", "batchnorm_and_bias", "1d"]

# The keys the sections share, declared once.
ExcludeFromDecayKey = Annotated[ExcludeFromDecay, Field(
    description="parameters without weight decay: batch-norm's γ and β (batchnorm, the "
                "official); also the biases (batchnorm_and_bias); every parameter with at "
                "most one axis longer than 1 (1d)")]
ClipGradNorm = Annotated[Number, Field(
    ge=0, description="clip the gradient by its global norm over all parameters (the mean "
                      "over all ranks, unscaled) to this value before the step; 0: off")]
AdaptExcluded = Annotated[Flag, Field(
    description="also scale the step of the parameters excluded from weight decay by the "
                "trust ratio, as the paper's algorithm does (a zero-initialised one then never "
                "moves under lamb, and steps the global rate under lars); false: they take the "
                "plain step (lamb: Adam's, lars: momentum's), as the published "
                "implementations do")]

_TYPE_DESCRIPTION = ("the solver: momentum and nesterov step lr_scheduler.args.base_lr per "
                     "example times the global batch; adamw, lamb and lars step base_lr itself")


@recipe
class _SharedKeys:
    """The keys of every solver section (each section adds its `type` and its own keys)."""

    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0


@recipe
class _AdamKeys(_SharedKeys):
    """The keys of the solvers built on Adam's moment estimates."""

    beta1: Annotated[Number, Field(ge=0, lt=1, description="decay of the gradient's running "
                                                           "mean (β₁)")] = 0.9
    beta2: Annotated[Number, Field(ge=0, lt=1, description="decay of the squared gradient's "
                                                           "running mean (β₂)")] = 0.999


@recipe
class MomentumSolverSection(_SharedKeys):
    """SGD with momentum, the official update: v = m v + lr (g + wd w); w -= v."""

    type: Annotated[Literal["momentum"], Field(description=_TYPE_DESCRIPTION)] = "momentum"


@recipe
class NesterovSolverSection(_SharedKeys):
    """Nesterov's accelerated gradient in the form of Bengio et al. 2013, eq. 7, with the
    coupled weight decay of momentum."""

    type: Annotated[Literal["nesterov"], Field(description=_TYPE_DESCRIPTION)] = "nesterov"


@recipe
class AdamWSolverSection(_AdamKeys):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019, algorithm 2)."""

    type: Annotated[Literal["adamw"], Field(description=_TYPE_DESCRIPTION)] = "adamw"
    eps: Annotated[Number, Field(
        gt=0, description="added to the root of the squared-gradient mean; NNabla adds it "
                          "before the bias correction: the paper's ε/√(1-β₂ᵗ)")] = 1e-8


@recipe
class LambSolverSection(_AdamKeys):
    """LAMB (You et al. 2020, algorithm 2) with bias correction and φ(z) = clip(z, γl, γu)."""

    type: Annotated[Literal["lamb"], Field(description=_TYPE_DESCRIPTION)] = "lamb"
    eps: Annotated[Number, Field(gt=0, description="added to the root of the bias-corrected "
                                                   "squared-gradient mean (in the plain Adam "
                                                   "step before the correction, as adamw's)")
                   ] = 1e-6
    gamma_l: Annotated[Number, Field(ge=0, description="lower bound of φ, the layer's weight "
                                                       "norm in the trust ratio")] = 0.0
    gamma_u: Annotated[Number, Field(gt=0, description="upper bound of φ, the layer's weight "
                                                       "norm in the trust ratio")] = 10.0
    adapt_excluded: AdaptExcluded = False

    @model_validator(mode="after")
    def _bounds_ordered(self) -> LambSolverSection:
        if self.gamma_l > self.gamma_u:
            raise rule_error(f"must be >= gamma_l ({self.gamma_l:g}), got {self.gamma_u:g}",
                             "gamma_u")
        return self


@recipe
class LarsSolverSection(_SharedKeys):
    """LARS (You et al. 2017, algorithm 1): momentum on the layer-wise scaled gradient."""

    type: Annotated[Literal["lars"], Field(description=_TYPE_DESCRIPTION)] = "lars"
    coefficient: Annotated[Number, Field(gt=0, le=1, description="the trust coefficient η "
                                                                 "of the local rate")] = 0.001
    eps: Annotated[Number, Field(gt=0, description="keeps the local rate finite; a layer of "
                                                   "smaller weight norm steps the global rate "
                                                   "(NNabla's; the paper's local rate is 0)")
                   ] = 1e-6
    adapt_excluded: AdaptExcluded = False


SolverSection = Annotated[
    Union[MomentumSolverSection, NesterovSolverSection, AdamWSolverSection, LambSolverSection,
          LarsSolverSection], Field(discriminator="type")]

# The types whose `base_lr` is the step size itself, not a rate per example.
ABSOLUTE_RATE_TYPES = ("adamw", "lamb", "lars")

BATCH_NORM_SUFFIXES: Tuple[str, ...] = ("/gamma", "/beta")
BIAS_SUFFIX = "/b"  # NNabla's name of a convolution's or an affine layer's bias

# The checkpoint key of a pstate entry of NNabla's solvers, where it is not the entry's own
# name: the velocity of Momentum (and Nesterov) is saved as "momentum", the key checkpoints
# written without a solver section hold, so that those still load.
_STATE_KEYS = {"m": "momentum"}
_COUNTERS = ("good_steps", "steps", "skipped_steps")


def is_decayed(name: str, shape: Tuple[int, ...] = (), exclude: ExcludeFromDecay = "batchnorm"
               ) -> bool:
    """Whether weight decay applies to the parameter `name` of `shape` under `exclude`."""
    if exclude == "1d":
        return sum(1 for size in shape if size > 1) > 1
    if name.endswith(BATCH_NORM_SUFFIXES):
        return False
    return not (exclude == "batchnorm_and_bias" and name.endswith(BIAS_SUFFIX))


def _nnabla_solver(section: SolverSection, momentum: float, base_lr: float, decayed: bool
                  ) -> S.Solver:
    """The NNabla solver of the decayed parameters, or of those excluded from decay."""
    kind = section.type
    plain = not decayed and not getattr(section, "adapt_excluded", True)
    if kind == "momentum" or (kind == "lars" and plain):
        return S.Momentum(base_lr, momentum)
    if kind == "nesterov":
        return S.Nesterov(base_lr, momentum)
    if kind == "adamw":  # built with base_lr: NNabla's decay follows lr_t / base_lr
        return S.AdamW(base_lr, section.beta1, section.beta2, section.eps, 0.0)
    if kind == "lamb":
        if plain:
            return S.Adam(base_lr, section.beta1, section.beta2, section.eps)
        return S.Lamb(base_lr, section.beta1, section.beta2, section.gamma_l, section.gamma_u,
                      section.eps, bias_correction=True)
    if kind == "lars":
        return S.Lars(base_lr, momentum, section.coefficient, section.eps)
    raise ValueError(f"unknown solver type {kind!r}")


@dataclasses.dataclass(frozen=True)
class LossScaling:
    """Static scaling keeps the scale `initial` and never checks gradients (the official
    behaviour). Dynamic scaling starts at `initial`; if any gradient is inf or nan the update
    is skipped and the scale halved (not below `min_scale`); after `growth_interval`
    consecutive good updates it doubles."""

    initial: float = 1.0
    dynamic: bool = False
    growth_interval: int = 2000
    min_scale: float = 1.0


class Solver:
    """The recipe's solver over the trainable parameters, with loss scaling and
    checkpointable state.

    `params` is name -> Variable in a fixed order (e.g. `nn.get_parameters()`, the network's
    creation order); parameters with `need_grad=False` (batch-norm statistics) are ignored.
    The same order is used by `parameters()` for the gradient all-reduce, so every worker
    must build the same network.

    Learning rate: `set_learning_rate` takes the rate per example times `examples_per_update`
    (`solver_learning_rate`), for every type. Momentum and nesterov step it; adamw, lamb and
    lars step it divided by `examples_per_update` (their `base_lr` is absolute, see
    this module's docstring). `base_lr` is the schedule's peak in the same unit as the
    schedule's values: adamw's decay follows the rate's ratio to it.

    Loss scaling (`LossScaling`): the caller backpropagates `loss * loss_scale`; `update()`
    divides the gradients by it first, so the step equals the unscaled one.
    """

    def __init__(
        self,
        params: Mapping[str, nn.Variable],
        section: SolverSection,
        momentum: float,
        weight_decay: float,
        base_lr: float,
        examples_per_update: int = 1,
        scaling: LossScaling = LossScaling(),
    ):
        if scaling.initial <= 0:
            raise ValueError(f"loss_scale must be > 0, got {scaling.initial}")
        if scaling.growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1, got {scaling.growth_interval}")
        if section.type == "adamw" and base_lr <= 0:
            raise ValueError(f"adamw needs base_lr > 0, got {base_lr}")
        self._params: Dict[str, nn.Variable] = {
            name: var for name, var in params.items() if var.need_grad
        }
        if not self._params:
            raise ValueError("no trainable parameters to optimise")
        self.section = section
        self.weight_decay = weight_decay
        self.dynamic_loss_scaling = scaling.dynamic
        self.growth_interval = scaling.growth_interval
        self.min_loss_scale = scaling.min_scale
        self.loss_scale = float(scaling.initial)
        self.good_steps = 0  # consecutive finite updates since the last scale change
        self.steps = 0  # updates applied
        self.skipped_steps = 0  # updates skipped because of inf/nan gradients
        self._rate_divisor = examples_per_update if section.type in ABSOLUTE_RATE_TYPES else 1
        self._lr = base_lr
        self._groups: List[Tuple[bool, S.Solver]] = []
        for decayed in (True, False):
            group = {n: v for n, v in self._params.items()
                     if is_decayed(n, v.shape, section.exclude_from_decay) == decayed}
            if group:
                solver = _nnabla_solver(section, momentum, base_lr, decayed)
                solver.set_parameters(group)
                self._groups.append((decayed, solver))

    def parameters(self) -> List[nn.Variable]:
        """Trainable parameters in a fixed order (the order given), for the all-reduce."""
        return list(self._params.values())

    def set_learning_rate(self, learning_rate: float) -> None:
        """The rate per example times the examples of an update (`solver_learning_rate`)."""
        self._lr = learning_rate / self._rate_divisor
        for _, solver in self._groups:
            solver.set_learning_rate(self._lr)

    @property
    def learning_rate(self) -> float:
        """The step size the NNabla solvers take."""
        return self._lr

    def zero_grad(self) -> None:
        """Clear the gradients (nnabla accumulates parameter gradients over backward calls)."""
        for _, solver in self._groups:
            solver.zero_grad()

    def _gradients_finite(self) -> bool:
        return not any(solver.check_inf_or_nan_grad() for _, solver in self._groups)

    def gradient_norm(self) -> float:
        """The global L2 norm of the current gradients, accumulated in float64."""
        return math.sqrt(sum(float(np.square(p.g, dtype=np.float64).sum())
                             for p in self._params.values()))

    def update(self) -> bool:
        """Apply one step from the current gradients; False when skipped (dynamic scaling)."""
        if self.dynamic_loss_scaling and not self._gradients_finite():
            self.skipped_steps += 1
            self.good_steps = 0
            self.loss_scale = max(self.min_loss_scale, self.loss_scale / 2)
            return False
        if self.loss_scale != 1.0:
            for _, solver in self._groups:
                solver.scale_grad(1.0 / self.loss_scale)
        limit = self.section.clip_grad_norm
        if limit:
            norm = self.gradient_norm()
            if norm > limit:
                for _, solver in self._groups:
                    solver.scale_grad(limit / norm)
        for decayed, solver in self._groups:
            if decayed and self.weight_decay:
                solver.weight_decay(self.weight_decay)  # coupled, or the fused rate of the step
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

        Keys: `<state>/<param name>` for each entry of the NNabla solver's per-parameter
        state (`momentum` for Momentum's and Nesterov's velocity, `mean` and `var` for
        AdamW's, Lamb's and Adam's moments, `v` for Lars' velocity), `t/<param name>`
        (NNabla's per-parameter update counter) and the scalars `loss_scale`, `good_steps`,
        `steps`, `skipped_steps`.
        """
        state: Dict[str, np.ndarray] = {}
        for _, solver in self._groups:
            for name, solver_state in solver.get_states().items():
                for entry, value in solver_state.pstate.items():
                    state[f"{_STATE_KEYS.get(entry, entry)}/{name}"] = np.array(value.d,
                                                                                copy=True)
                state[f"t/{name}"] = np.array(solver_state.t, dtype=np.int64)
        state["loss_scale"] = np.array(self.loss_scale, dtype=np.float64)
        for key in _COUNTERS:
            state[key] = np.array(getattr(self, key), dtype=np.int64)
        return state

    def _expected_keys(self) -> Set[str]:
        expected: Set[str] = {"loss_scale", *_COUNTERS}
        for _, solver in self._groups:
            for name, solver_state in solver.get_states().items():
                expected |= {f"{_STATE_KEYS.get(e, e)}/{name}" for e in solver_state.pstate}
                expected.add(f"t/{name}")
        return expected

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `state_dict()` output; the parameter names and shapes must match."""
        expected = self._expected_keys()
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
                for entry, variable in solver_state.pstate.items():
                    key = f"{_STATE_KEYS.get(entry, entry)}/{name}"
                    value = np.asarray(state[key])
                    if value.shape != variable.shape:
                        raise ValueError(f"solver state '{key}' has shape {value.shape}, "
                                         f"the parameter has {variable.shape}")
                    variable.d = value
                solver_state.t = int(state[f"t/{name}"])
            solver.set_states(states)
        self.loss_scale = float(state["loss_scale"])
        self.good_steps = int(state["good_steps"])
        self.steps = int(state["steps"])
        self.skipped_steps = int(state["skipped_steps"])


class MomentumSolver(Solver):
    """The official solver (`solver: {type: momentum}`, the default): Momentum SGD with
    coupled weight decay on all but batch-norm's gamma and beta."""

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
        super().__init__(params, MomentumSolverSection(), momentum, weight_decay, learning_rate,
                         scaling=LossScaling(loss_scale, dynamic_loss_scaling, growth_interval,
                                             min_loss_scale))


def _preview(names: List[str], limit: int = 3) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def recipe_solver(config: Any, type_config: str, dynamic_loss_scaling: bool,
                  global_batch: int) -> Solver:
    """The recipe's solver over the current parameters, as train.py and benchmark.py build
    it: adamw, lamb and lars take base_lr as their step size, undoing the scaling by the
    update's examples that the loop applies to every rate; a static loss scale only matters
    in half precision, a dynamic one is honoured in any."""
    scale = config.loss_scaling if type_config == "half" or dynamic_loss_scaling else 1.0
    return Solver(nn.get_parameters(), config.solver, config.momentum, config.weight_decay,
                  config.lr_scheduler.args.base_lr, global_batch,
                  LossScaling(scale, dynamic_loss_scaling))
