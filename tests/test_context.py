"""The compute back end each -c value gets (utils/process/context.py), decided without a GPU."""
from __future__ import annotations

import pytest

from utils.process.context import chosen_backend, select_context


@pytest.mark.parametrize("context, gpu, backend", [
    ("auto", True, "cudnn"), ("auto", False, "cpu"), ("cpu", True, "cpu"),
    ("cudnn", False, "cudnn"), ("cuda", True, "cudnn"), ("cuda", False, "cudnn"),
])
def test_each_context_flag_gets_its_backend(context, gpu, backend):
    assert chosen_backend(context, gpu)[0] == backend


def test_cuda_runs_as_cudnn_and_says_why():
    """Plain CUDA would run pooling and LogSoftmax on the host (and fail on NHWC)."""
    assert chosen_backend("cuda", True)[1] == ("-c cuda runs as cudnn (NNabla's pooling and "
                                               "LogSoftmax have GPU kernels in cuDNN only)")


def test_an_unknown_context_or_precision_is_refused():
    with pytest.raises(ValueError, match="unknown context 'gpu'"):
        chosen_backend("gpu", True)
    with pytest.raises(ValueError, match="unknown type config 'bf16'"):
        select_context("cpu", 0, "bf16")
    ctx, backend, why = select_context("cpu", 0, "float")
    assert (backend, ctx.backend[0], why) == ("cpu", "cpu:float",
                                              "context cpu (float, device 0): as requested")


@pytest.mark.parametrize("script, flag", [("validation.py", "cudnn"), ("train.py", "cuda"),
                                          ("benchmark.py", "cudnn")])
def test_a_gpu_context_without_the_extension_is_our_line_alone(script, flag, tmp_path):
    """NNabla logged "[nnabla][ERROR]: Extension `cudnn` does not exist." above our line."""
    import subprocess
    import sys

    from paths import HANG_GUARD, REPO

    from utils.process.context import gpu_count

    if gpu_count():
        pytest.skip("NNabla's CUDA extension is installed here")
    args = {"validation.py": ["w.h5", "-a", "resnet18", "-V", str(tmp_path)],
            "train.py": ["-a", "resnet18", "-T", str(tmp_path), "-V", str(tmp_path)],
            "benchmark.py": ["-a", "resnet18", "-o", str(tmp_path / "b.csv")]}[script]
    result = subprocess.run([sys.executable, str(REPO / script), *args, "-c", flag],
                            cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: -c {flag} needs NNabla's CUDA extension (requirements-gpu.txt), not installed "
        "here (No module named 'nnabla_ext.cudnn'); use -c auto or cpu"]


@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_channel_last_on_the_cpu_is_refused_before_any_work(backend, tmp_path):
    """train.py on a CPU with --channel-last: one line, status 2, nothing read or written."""
    import subprocess
    import sys

    from paths import HANG_GUARD, REPO

    from utils.process.context import gpu_count

    if gpu_count() and backend == "auto":
        pytest.skip("-c auto runs on this machine's GPU, which takes channel-last")
    missing = tmp_path / "no-such-folder"  # never opened: the refusal comes first
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-a", "resnet18", "-T", str(missing),
         "-V", str(missing), "--channel-last", "-c", backend],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --channel-last needs a GPU: NNabla's CPU backend runs NCHW only"]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []
