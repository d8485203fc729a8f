"""The `solver` section of the training recipes: which of NNabla's solvers steps, and its keys.

One section class per solver type (`type` chooses it, as `lr_scheduler.type` does); the keys
that several types share are declared once below and used by each. The top-level `momentum`
and `weight_decay` keys stay where the official layout has them: `momentum` is the momentum
of momentum, nesterov and lars, `weight_decay` the decay coefficient of every type, coupled
(added to the gradient) for momentum and nesterov, decoupled for adamw and lamb, inside the
trust ratio for lars, each as its paper defines it. `utils.optim` builds the solvers.

The learning rate: for momentum and nesterov `lr_scheduler.args.base_lr` is per example and
the step size is it times the global batch (the linear scaling rule of SGD, as today). For
adamw, lamb and lars it is the step size itself: their steps are normalised (per coordinate,
or per layer by the trust ratio), so the gradient's batch-size dependence that the linear
rule compensates is gone, and their published rates are absolute ones for a stated batch.
"""
from __future__ import annotations

from typing import Union

from pydantic import Field, model_validator
from typing_extensions import Annotated, Literal

from .recipe_fields import Flag, Number, recipe, rule_error

ExcludeFromDecay = Literal["batchnorm", "batchnorm_and_bias", "1d"]

# The keys the sections share, declared once.
ExcludeFromDecayKey = Annotated[ExcludeFromDecay, Field(
    description="parameters without weight decay: batch-norm's γ and β (batchnorm, the "
                "official); also the biases (batchnorm_and_bias); every parameter with at "
                "most one axis longer than 1 (1d)")]
ClipGradNorm = Annotated[Number, Field(
    ge=0, description="clip the gradient by its global norm over all parameters (the mean "
                      "over all ranks, unscaled) to this value before the step; 0: off")]
Beta1 = Annotated[Number, Field(ge=0, lt=1, description="decay of the gradient's running "
                                                        "mean (β₁)")]
Beta2 = Annotated[Number, Field(ge=0, lt=1, description="decay of the squared gradient's "
                                                        "running mean (β₂)")]
AdaptExcluded = Annotated[Flag, Field(
    description="also scale the step of the parameters excluded from weight decay by the "
                "trust ratio, as the paper's algorithm does (zero-initialised ones then never "
                "move); false: they take the plain step (lamb: Adam's, lars: momentum's), as "
                "the published implementations do")]

_TYPE_DESCRIPTION = ("the solver: momentum and nesterov step lr_scheduler.args.base_lr per "
                     "example times the global batch; adamw, lamb and lars step base_lr itself")


@recipe
class MomentumSolverSection:
    """SGD with momentum, the official update: v = m v + lr (g + wd w); w -= v."""

    type: Annotated[Literal["momentum"], Field(description=_TYPE_DESCRIPTION)] = "momentum"
    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0


@recipe
class NesterovSolverSection:
    """Nesterov's accelerated gradient in the form of Bengio et al. 2013, eq. 7, with the
    coupled weight decay of momentum."""

    type: Annotated[Literal["nesterov"], Field(description=_TYPE_DESCRIPTION)] = "nesterov"
    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0


@recipe
class AdamWSolverSection:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019, algorithm 2)."""

    type: Annotated[Literal["adamw"], Field(description=_TYPE_DESCRIPTION)] = "adamw"
    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0
    beta1: Beta1 = 0.9
    beta2: Beta2 = 0.999
    eps: Annotated[Number, Field(
        gt=0, description="added to the root of the squared-gradient mean; NNabla adds it "
                          "before the bias correction: the paper's ε/√(1-β₂ᵗ)")] = 1e-8


@recipe
class LambSolverSection:
    """LAMB (You et al. 2020, algorithm 2) with bias correction and φ(z) = clip(z, γl, γu)."""

    type: Annotated[Literal["lamb"], Field(description=_TYPE_DESCRIPTION)] = "lamb"
    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0
    beta1: Beta1 = 0.9
    beta2: Beta2 = 0.999
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
class LarsSolverSection:
    """LARS (You et al. 2017, algorithm 1): momentum on the layer-wise scaled gradient."""

    type: Annotated[Literal["lars"], Field(description=_TYPE_DESCRIPTION)] = "lars"
    exclude_from_decay: ExcludeFromDecayKey = "batchnorm"
    clip_grad_norm: ClipGradNorm = 0.0
    coefficient: Annotated[Number, Field(gt=0, le=1, description="the trust coefficient η "
                                                                 "of the local rate")] = 0.001
    eps: Annotated[Number, Field(gt=0, description="keeps the local rate finite; a layer of "
                                                   "smaller weight norm steps the global "
                                                   "rate")] = 1e-6
    adapt_excluded: AdaptExcluded = False


SolverSection = Annotated[
    Union[MomentumSolverSection, NesterovSolverSection, AdamWSolverSection, LambSolverSection,
          LarsSolverSection], Field(discriminator="type")]

# The types whose `base_lr` is the step size itself, not a rate per example.
ABSOLUTE_RATE_TYPES = ("adamw", "lamb", "lars")
