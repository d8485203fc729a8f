"""Issue 29's smaller GPU defects, reached on a CPU:

- the DALI copy into NNabla's input on the stream NNabla computes on: a real batch whose
  image list is wrapped by a stand-in for DALI's TensorListGPU (no GPU here) that has DALI
  2.4's `copy_to_external` parameters, records the call and really copies the CPU images;
- `nn.seed` every iteration only for graphs that draw from NNabla's global generator: the
  decision on real graphs, and train.py's loop counted through the real `nn.seed`;
- nvJPEG's padding bounded by the INT32 of DALI's decoder schema.
"""
from __future__ import annotations

import ctypes
import dataclasses
import inspect
import re

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest
from data_fixtures import host_images, image_set, make_batches
from eval_fixtures import run_main
from paths import DEMO

import infer
import train
import validation
from models import build_network
from utils.cli.flags import MAX_DALI_PADDING_MB, MEBIBYTE
from utils.labels.file_list import FileList
from utils.process.errors import USER_ERROR_STATUS
from utils.train.step import draws_global_random, iteration_seed

# --------------------------------------------------------------------------- the DALI copy


class GpuListStandIn:
    """DALI's TensorListGPU as far as `Batch.copy_to` uses it, around a real CPU batch:
    `copy_to_external` records its arguments, then copies the CPU images to the pointer."""

    def __init__(self, cpu_list):
        self.cpu_list, self.calls = cpu_list, []

    def as_tensor(self):
        return self.cpu_list.as_tensor()

    def copy_to_external(self, ptr, cuda_stream=None, non_blocking=False,
                         use_copy_kernel=False):
        self.calls.append({"ptr": ptr, "cuda_stream": cuda_stream,
                           "non_blocking": non_blocking, "use_copy_kernel": use_copy_kernel})
        self.cpu_list.as_tensor().copy_to_external(ptr)


def dali_parameters(method) -> list:
    """(name, default) of a DALI binding's parameters, from pybind11's signature line."""
    line = method.__doc__.strip().splitlines()[0]
    found = re.findall(r"(\w+): [\w.]+(?: = (\w+))?", line.split("(", 1)[1])
    return [(name, default or None) for name, default in found if name != "self"]


def test_the_stand_in_has_the_parameters_of_dali_s_gpu_copy():
    from nvidia.dali.backend import TensorGPU, TensorListGPU

    ours = [(p.name, None if p.default is inspect.Parameter.empty else str(p.default))
            for p in inspect.signature(GpuListStandIn.copy_to_external).parameters.values()]
    expected = [("ptr", None), ("cuda_stream", "None"), ("non_blocking", "False"),
                ("use_copy_kernel", "False")]
    assert dali_parameters(TensorListGPU.copy_to_external) == expected
    assert dali_parameters(TensorGPU.copy_to_external) == expected
    assert ours[1:] == expected  # (after self)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_gpu_copy_is_queued_on_nnabla_s_stream(tmp_path, dtype):
    """NNabla-CUDA runs its kernels on the NULL (legacy default) stream: the copy goes there,
    after the kernels still reading the previous batch and before the next forward, and DALI
    (non_blocking) keeps its buffer until the copy is done. Without a stream DALI copied on
    a pool stream of its own that waits for none of NNabla's work."""
    from nnabla.ext_utils import get_extension_context

    files = FileList.from_files(image_set(str(tmp_path), [(40, 30), (30, 44)]))
    with make_batches(files, 2, spatial_size=16, dtype=dtype) as loader:
        batch = next(loader.epoch(0))
        expected = host_images(batch)
        stand_in = GpuListStandIn(batch._images)
        on_gpu = dataclasses.replace(batch, on_gpu=True, _images=stand_in)
        x = nn.Variable(loader.image_shape)
        on_gpu.copy_to(x, get_extension_context("cpu"))  # the pointer: a host one here
    [call] = stand_in.calls
    assert isinstance(call["cuda_stream"], ctypes.c_void_p)
    assert call["cuda_stream"].value is None  # the NULL handle (not cudaStreamLegacy's 1)
    assert call["non_blocking"] is True and call["use_copy_kernel"] is False
    assert call["ptr"].value == x.data.data_ptr(dtype, get_extension_context("cpu"))
    assert x.d.dtype == dtype and np.array_equal(x.d, expected)


# --------------------------------------------------------------------------- nn.seed


def training_graph(arch: str) -> nn.Variable:
    with nn.parameter_scope(arch):
        logits, _ = build_network(nn.Variable((2, 3, 32, 32)), 10, arch, test=False)
    return logits


@pytest.mark.parametrize("arch, draws", [("resnet18", False), ("resnet50", False),
                                         ("mobilenet_v1", False), ("mobilenet_v3_small", True),
                                         ("efficientnet_b0", True)])
def test_only_graphs_that_draw_from_the_global_generator_are_reseeded(arch, draws):
    assert draws_global_random(training_graph(arch)) is draws


def test_a_function_with_its_own_seed_does_not_need_the_global_one():
    x = nn.Variable((2, 3))
    assert not draws_global_random(F.relu(x))
    assert not draws_global_random(F.dropout(x, 0.5, seed=7))  # its own generator
    assert draws_global_random(F.dropout(x, 0.5))
    assert draws_global_random(F.relu(x) + F.rand(shape=(2, 3)))
    assert draws_global_random(F.relu(x), F.randn(shape=(1,)))
    assert draws_global_random(F.random_flip(nn.Variable((1, 3, 4, 4))))


@pytest.mark.slow
@pytest.mark.parametrize("arch, reseeds", [("resnet18", False), ("mobilenet_v3_small", True)])
def test_the_loop_reseeds_each_iteration_only_when_the_graph_draws(tmp_path, monkeypatch,
                                                                   arch, reseeds):
    """Four images, batch 2: two iterations; every nn.seed call counted, the real one run."""
    seeds, real_seed = [], nn.seed

    def counted(value: int) -> None:
        seeds.append(value)
        real_seed(value)

    monkeypatch.setattr(nn, "seed", counted)
    listed = tmp_path / "train_label"
    names = sorted(p.name for p in (DEMO / "train" / "bag").iterdir())[:4]
    listed.write_text("".join(f"bag/{name} 0\n" for name in names))
    assert run_main(train.main, "-a", arch, "--num-classes", "2", "--spatial-size", "32",
                    "-e", "1", "-b", "2", "-v", "0", "--seed", "5", "--dali-num-threads", "1",
                    "-T", DEMO / "train", "--train-list", listed, "-m", tmp_path / "run") == 0
    per_iteration = [iteration_seed(5, 0, 0, i) for i in range(2)]
    assert [s for s in seeds if s in per_iteration] == (per_iteration if reseeds else [])
    assert seeds[0] == 5  # the parameters' initialisation, whatever the graph


# --------------------------------------------------------------------------- nvJPEG padding


def test_the_padding_bound_is_dali_s_int32():
    from nvidia.dali.backend import GetSchema
    from nvidia.dali.types import DALIDataType

    for op in ("decoders__Image", "decoders__ImageSlice"):
        for arg in ("device_memory_padding", "host_memory_padding"):
            assert GetSchema(op).GetArgumentType(arg) == DALIDataType.INT32, (op, arg)
    int32_max = np.iinfo(np.int32).max
    assert MAX_DALI_PADDING_MB == 2047
    assert MAX_DALI_PADDING_MB * MEBIBYTE <= int32_max < (MAX_DALI_PADDING_MB + 1) * MEBIBYTE


@pytest.mark.parametrize("parse, required", [
    (train.parse_args, ["-a", "resnet18"]),
    (validation.parse_args, ["w.h5", "-a", "resnet18"]),
    (infer.parse_args, ["photo.jpg", "w.h5", "-a", "resnet18"]),
])
def test_a_padding_beyond_int32_is_one_line_naming_the_flag(parse, required, capsys):
    flag = "--dali-nvjpeg-memory-padding-mb"
    assert parse([*required, flag, "2047"]).dali_nvjpeg_memory_padding == 2047 << 20
    assert parse([*required, flag, "0"]).dali_nvjpeg_memory_padding == 0
    for value in ("2048", "4096", "-1"):
        with pytest.raises(SystemExit) as stopped:
            parse([*required, flag, value])
        assert stopped.value.code == USER_ERROR_STATUS
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.endswith(f"error: argument {flag}: must be in 0..2047 (MiB; DALI takes "
                             f"the padding in bytes as a 32-bit integer), got {value}")
