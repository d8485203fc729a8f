"""The recipe's augmentation sections: the random-resized crop's ranges with a policy, random
erasing and repeated augmentation (`augmentation`), and progressive resizing's schedule
(`progressive_resizing`). What they declare is applied by `utils.data.augmentation`,
`utils.data.batch_plan` and the training loop."""
from __future__ import annotations

from typing import Tuple

from pydantic import AfterValidator, Field, model_validator
from typing_extensions import Annotated, Literal, get_args

from .fields import SAVED_WHEN_SET, Integer, Number, Ordered, recipe, rule_error

CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
# Random erasing's box (Zhong et al. 2020; torchvision's and timm's defaults).
ERASING_AREA = (0.02, 1 / 3)
ERASING_ASPECT = (0.3, 3.3)
ERASING_ATTEMPTS = 10
# DALI's automatic augmentation policies (nvidia.dali.auto_aug), applied after the crop.
Policy = Literal["none", "randaugment", "trivialaugment", "autoaugment"]
POLICIES: Tuple[str, ...] = get_args(Policy)


@recipe
class Augmentation:
    """The training augmentation (recipe section `augmentation`): the random-resized crop's
    ranges (the official ones by default), an automatic augmentation policy, random erasing
    and repeated augmentation (both off by default)."""

    random_area: Annotated[Tuple[Number, Number], AfterValidator(Ordered(0, 1)), Field(
        description="the random-resized crop's area, as fractions of the image's")] = CROP_AREA
    random_aspect_ratio: Annotated[Tuple[Number, Number], AfterValidator(Ordered(0)), Field(
        description="the crop's aspect ratio (width / height)")] = CROP_RATIO
    policy: Annotated[Policy, Field(
        description="DALI's automatic augmentation, after the crop")] = "none"
    n: Annotated[Integer, Field(ge=1, le=10, description="RandAugment's operations per image "
                                                         "(policy randaugment only)")] = 2
    m: Annotated[Integer, Field(ge=0, le=30, description="RandAugment's magnitude "
                                                         "(policy randaugment only)")] = 9
    random_erasing: Annotated[Number, Field(
        ge=0, le=1, description="random erasing's probability per image (Zhong et al. 2020): "
                                "a box of the normalised image replaced by N(0, 1) noise"),
        SAVED_WHEN_SET] = 0.0
    erasing_area: Annotated[Tuple[Number, Number], AfterValidator(Ordered(0, 1)), Field(
        description="the erased box's area, as fractions of the image's"),
        SAVED_WHEN_SET] = ERASING_AREA
    erasing_aspect: Annotated[Tuple[Number, Number], AfterValidator(Ordered(0)), Field(
        description="the erased box's aspect ratio (height / width), drawn log-uniform"),
        SAVED_WHEN_SET] = ERASING_ASPECT
    repeated_augmentation: Annotated[Integer, Field(
        ge=1, le=16, description="repeated augmentation (Hoffer et al. 2020): every image k "
                                 "times per k epochs, its copies side by side, epochs "
                                 "as long as without it; 1 is off"), SAVED_WHEN_SET] = 1

    @model_validator(mode="after")
    def _settings_of_the_policy(self) -> Augmentation:
        """Only RandAugment reads n and m. (A saved config holds their defaults whatever the
        policy: those change nothing, so they are accepted.)"""
        if self.policy != "randaugment":
            for key in ("n", "m"):
                if getattr(self, key) != self.__pydantic_fields__[key].default:
                    raise rule_error(f"is a setting of policy randaugment; policy {self.policy} "
                                     f"ignores it: remove it or choose randaugment", key)
        return self


OFFICIAL = Augmentation()  # the official crop ranges, no policy


@recipe
class ProgressiveResizing:
    """Training resolution growing linearly from `start` to `end` pixels between epochs
    `start_epoch` and `end_epoch` (FFCV's progressive resizing), then staying at `end`
    (recipe section `progressive_resizing`)."""

    start: Annotated[Integer, Field(ge=8, description="training resolution (pixels) until "
                                                      "start_epoch")]
    end: Annotated[Integer, Field(ge=8, description="training resolution from end_epoch on")]
    start_epoch: Annotated[Integer, Field(ge=0, description="the epoch the growth starts at")]
    end_epoch: Annotated[Integer, Field(ge=0, description="the epoch the growth ends at")]

    @model_validator(mode="after")
    def _epochs_in_order(self) -> ProgressiveResizing:
        if self.start_epoch > self.end_epoch:
            raise rule_error("needs 0 <= start_epoch <= end_epoch")
        return self

    def resolution(self, epoch: int) -> int:
        """The training input size of `epoch`: a multiple of 32 (of 8 below 64 pixels)."""
        span = self.end_epoch - self.start_epoch
        growth_done = min(max((epoch - self.start_epoch) / span, 0.0), 1.0) if span > 0 \
            else float(epoch > self.start_epoch)
        size = self.start + (self.end - self.start) * growth_done
        step = 32 if size >= 64 else 8
        return max(step, int(size / step + 0.5) * step)  # halves round up
