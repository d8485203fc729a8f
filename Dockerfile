# GPU training image: CUDA 12.0 with cuDNN 8, Python 3.10, Open MPI and NCCL 2 for multi-GPU
# training, NNabla with its CUDA 12 extension, DALI for CUDA 12 and the rest of the pinned
# requirements.
#
#   docker build -t nnabla-imagenet .
#   docker run --rm --gpus all --ipc=host -v /path/to/imagenet:/data:ro \
#       -v "$PWD/runs":/workspace/runs nnabla-imagenet python train.py --help
#   docker run ... nnabla-imagenet mpirun -n 4 python train.py <flags as in docs/training.md>
#
# --ipc=host (or a large --shm-size): NCCL keeps its buffers in /dev/shm, which Docker limits to
# 64 MB by default. The host needs an NVIDIA driver for CUDA 12.0 (525 or newer) and the NVIDIA
# Container Toolkit for --gpus.
# The image runs as the unprivileged user "trainer" (uid 1000; Open MPI's mpirun refuses to run
# as root without extra flags): add --user "$(id -u):$(id -g)" when the mounted output folder
# belongs to someone else.
#
# Versions. Every Python package and its version comes from requirements.txt and
# requirements-gpu.txt, copied in below; none is repeated here. The base image must match the
# CUDA extension pinned in requirements-gpu.txt: nnabla-ext-cuda120 is built for CUDA 12.0 and
# cuDNN 8 (8.8), and nvidia-dali-cuda120 in requirements.txt for CUDA 12.
# tests/test_dockerfile.py checks both, and that no version written here disagrees with a pin.
#
# MPI: one implementation in the process, and it must be Open MPI.
# - NNabla's multi-GPU communicator (MultiProcessDataParallelCommunicator) loads the MPI
#   library at run time by its unversioned name: $OMPI_HOME/lib/libmpi.so, else any
#   "libmpi.so" the dynamic loader finds. It then looks up Open MPI's own symbols
#   (ompi_mpi_comm_world, ...), so only Open MPI works there. The NCCL library is loaded the
#   same way (libnccl.so or libnccl.so.2 in the system library folders, or $NCCL_HOME/lib).
# - Our scripts also use mpi4py in the same process (rank, barriers, metrics). The pinned
#   mpi4py wheel carries two builds, one for MPICH's ABI (libmpi.so.12) and one for Open MPI's
#   (libmpi.so.40), and picks the one matching the first libmpi it finds, looking in the
#   virtual environment's lib/ before the system's.
# - requirements.txt also installs the pip "mpich" package, the CPU runtime for machines
#   without a system MPI. In this image it would put an MPICH libmpi.so in the environment's
#   lib/ (mpi4py would initialise MPICH while NNabla loads Open MPI: two MPI libraries in one
#   process) and an MPICH mpirun first on PATH (ranks launched by one implementation but
#   initialised by another each see a world of size 1). So the image installs every pin of
#   requirements.txt except "mpich", uses the distribution's Open MPI for mpirun and libmpi,
#   and tells mpi4py to use its Open MPI build (MPI4PY_MPIABI=openmpi). The mpi4py wheel needs
#   no compiler, and its version still comes from requirements.txt.
FROM nvidia/cuda:12.0.1-cudnn8-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive

# Python 3.10 (Ubuntu 22.04's own; NNabla 1.39.0 has wheels up to 3.10), Open MPI, and NCCL 2.
# NCCL: the CUDA base image already installs libnccl2 from NVIDIA's CUDA apt repository, built
# for CUDA 12.0, names it with its exact version in NV_LIBNCCL_PACKAGE and holds it; installing
# that same pinned name here is a no-op that fails the build if the base image ever stops
# providing it. Open MPI: openmpi-bin brings mpirun and the shared library libmpi.so.40; the
# unversioned libmpi.so that NNabla opens would otherwise come from libopenmpi-dev, which also
# drags in gfortran and headers, so a symbolic link is made instead, at the place where
# libopenmpi-dev puts it, and OMPI_HOME (below) points NNabla at it.
# Distribution packages are not pinned (DL3008): Ubuntu replaces versions in its archive with
# security updates, so a pinned version would stop building; the CUDA, cuDNN and NCCL versions,
# which must match the NNabla extension, are fixed by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.10 \
        python3.10-venv \
        openmpi-bin \
        "${NV_LIBNCCL_PACKAGE:?the CUDA base image must name its NCCL package}" \
    && ln -sf ../../libmpi.so.40 /usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so \
    && test -e /usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so \
    && ldconfig \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    OMPI_HOME=/usr/lib/x86_64-linux-gnu/openmpi \
    MPI4PY_MPIABI=openmpi \
    OMPI_MCA_btl_vader_single_copy_mechanism=none \
    PYTHONUNBUFFERED=1
# OMPI_MCA_btl_vader_single_copy_mechanism=none: Open MPI's shared-memory transport otherwise
# uses cross-memory attach, which Docker's default seccomp profile forbids.

# A pip recent enough for the wheel tags and metadata of the pinned packages (Ubuntu's venv
# bundles pip 22.0). pip itself is not a requirement of the project, hence its pin here.
ARG PIP_VERSION=26.3
COPY requirements.txt requirements-gpu.txt /tmp/requirements/
RUN python3.10 -m venv "$VIRTUAL_ENV" \
    && python -m pip install --no-cache-dir "pip==${PIP_VERSION}" \
    && grep -v -E '^mpich==' /tmp/requirements/requirements.txt > /tmp/requirements/image.txt \
    && python -m pip install --no-cache-dir \
        -r /tmp/requirements/image.txt \
        -r /tmp/requirements/requirements-gpu.txt \
    && rm -rf /tmp/requirements \
    && python -c "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; \
v = MPI.Get_library_version(); assert v.startswith('Open MPI'), v; print(v.splitlines()[0])"

RUN useradd --create-home --uid 1000 --shell /bin/bash trainer \
    && install -d -o trainer -g trainer /workspace
WORKDIR /workspace
COPY --chown=1000:1000 . /workspace
USER 1000:1000

CMD ["python", "train.py", "--help"]
