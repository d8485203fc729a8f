"""Choose NNabla's compute context: cuDNN when the CUDA extension and a GPU exist, else CPU."""
from __future__ import annotations

import importlib.util
from typing import Tuple

from nnabla.ext_utils import get_extension_context

from .startup import quiet_nnabla_info

CONTEXTS = ("auto", "cpu", "cuda", "cudnn")
TYPE_CONFIGS = ("float", "half")


def gpu_count() -> int:
    """The GPUs NNabla's CUDA extension sees (0 without the extension, a driver or a device)."""
    try:
        with quiet_nnabla_info():  # "Initializing CUDA extension...", as NNabla's own
            import nnabla_ext.cuda as cuda
    except ImportError:
        return 0
    try:
        return int(cuda.get_device_count())
    except Exception:  # the extension is installed but no driver or device is usable
        return 0


def gpu_available() -> bool:
    return gpu_count() > 0


def chosen_backend(context: str, gpu: bool) -> Tuple[str, str]:
    """(NNabla backend, why) for -c `context` on a machine with (`gpu`) or without a GPU.

    `-c cuda` runs as cudnn: NNabla's pooling and LogSoftmax have their CUDA kernels in the
    cuDNN extension only, so under plain `cuda` they would run on the host, copying every
    activation there and back, and fail outright on NHWC (--channel-last).
    """
    if context not in CONTEXTS:
        raise ValueError(f"unknown context '{context}'; choose from {', '.join(CONTEXTS)}")
    if context == "auto":
        if gpu:
            return "cudnn", "auto: CUDA extension and a GPU found"
        return "cpu", "auto: no usable GPU (CUDA extension or device missing)"
    if context == "cuda":
        return "cudnn", ("-c cuda runs as cudnn (NNabla's pooling and LogSoftmax have GPU "
                         "kernels in cuDNN only)")
    return context, "as requested"


def select_context(context: str = "auto", device_id: int = 0, type_config: str = "float"):
    """Return (NNabla context, backend name, a sentence saying why it was chosen)."""
    if type_config not in TYPE_CONFIGS:
        raise ValueError(f"unknown type config '{type_config}'; choose float or half")
    backend, why = chosen_backend(context, context == "auto" and gpu_available())
    if backend != "cpu" and importlib.util.find_spec(f"nnabla_ext.{backend}") is None:
        # (NNabla would log "[nnabla][ERROR]: Extension ... does not exist." before raising)
        raise ImportError(f"No module named 'nnabla_ext.{backend}'")
    ctx = get_extension_context(backend, device_id=str(device_id), type_config=type_config)
    return ctx, backend, f"context {backend} ({type_config}, device {device_id}): {why}"


def float_context(ctx):
    """The same backend computing in float32: losses and metrics stay exact under -t half."""
    return get_extension_context(
        ctx.backend[0].split(":")[0], device_id=ctx.device_id, type_config="float"
    )
