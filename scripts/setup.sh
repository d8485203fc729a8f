#!/usr/bin/env bash
# Create .venv with a CPython that NNabla 1.39.0 supports (3.8-3.10) and install the
# pinned requirements. Re-running is cheap: nothing is reinstalled unless a
# requirements file changed.
#   bash scripts/setup.sh           runtime requirements
#   bash scripts/setup.sh --dev     plus pytest, ruff and the TensorBoard server; as root
#                                   on a machine with apt, also Debian's Slurm and munge
#                                   (tests/test_slurm.py starts a one-node cluster), iproute2
#                                   and openssh-server (tests/test_two_hosts.py)
#   bash scripts/setup.sh --tensorboard  plus the TensorBoard server, to watch runs
#   bash scripts/setup.sh --gpu     plus NNabla's CUDA 12 extension, without pip's MPICH (its
#                                   multi-GPU communicator needs Open MPI: as root with apt,
#                                   Debian's openmpi-bin and libopenmpi-dev); then checks the
#                                   GPU stack (python -m utils.process.gpu_stack) and says what is missing
#   bash scripts/setup.sh --export  plus ONNX export and onnxruntime (export.py)
# PYTHON=/path/to/python3.x overrides the interpreter search.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req_files=("$root/requirements.txt")
# Complete pinned closures installed with --no-deps (see requirements-export.txt for why).
no_deps_files=()
add_requirements() {  # each file once, whichever options name it
  local f
  for f in "${req_files[@]}"; do [ "$f" = "$1" ] && return 0; done
  req_files+=("$1")
}
apt_packages=()
gpu=0
for arg in "$@"; do
  case "$arg" in
    --dev) add_requirements "$root/requirements-dev.txt"
           apt_packages+=(slurm-wlm munge libpmix-dev iproute2 openssh-server)
           add_requirements "$root/requirements-tensorboard.txt" ;;
    --tensorboard) add_requirements "$root/requirements-tensorboard.txt" ;;
    --gpu) add_requirements "$root/requirements-gpu.txt"
           apt_packages+=(openmpi-bin libopenmpi-dev)
           gpu=1 ;;
    --export) no_deps_files+=("$root/requirements-export.txt") ;;
    *) echo "setup: unknown option '$arg' (use --dev, --gpu, --export and/or --tensorboard)" >&2; exit 2 ;;
  esac
done

# Prints "3.x" for a working CPython 3.8-3.10 with venv, nothing otherwise. Pyenv shims exist
# for versions that are not selected and fail when run, hence running each candidate.
supported_version() {
  local version
  version="$("$1" - <<'PY' 2>/dev/null
import platform, sys, venv  # noqa: F401
if platform.python_implementation() == "CPython" and (3, 8) <= sys.version_info[:2] <= (3, 10):
    print("supported %d.%d" % sys.version_info[:2])
PY
)" || return 0
  case "$version" in
    "supported 3.8" | "supported 3.9" | "supported 3.10") echo "${version#supported }" ;;
  esac
}

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    if [ -n "$(supported_version "$PYTHON")" ]; then echo "$PYTHON"; return 0; fi
    echo "setup: PYTHON=$PYTHON is not a working CPython 3.8-3.10 with venv" >&2
    return 1
  fi
  local name minor candidate pyenv_root
  for name in python3.10 python3.9 python3.8 python3; do
    candidate="$(command -v "$name" || true)"
    if [ -n "$candidate" ] && [ -n "$(supported_version "$candidate")" ]; then
      echo "$candidate"; return 0
    fi
  done
  pyenv_root="${PYENV_ROOT:-}"
  if [ -z "$pyenv_root" ] && command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root 2>/dev/null || true)"
  fi
  [ -n "$pyenv_root" ] || pyenv_root="$HOME/.pyenv"
  for minor in 10 9 8; do
    # Newest patch release first.
    for candidate in $(ls -d "$pyenv_root"/versions/3."$minor".*/bin/python 2>/dev/null | sort -rV); do
      if [ -n "$(supported_version "$candidate")" ]; then echo "$candidate"; return 0; fi
    done
  done
  return 1
}

if [ -x "$venv/bin/python" ] && [ -n "$(supported_version "$venv/bin/python")" ]; then
  :
else
  if ! python="$(find_python)"; then
    echo "setup: no CPython 3.8-3.10 found (NNabla 1.39.0 has no wheels for newer Pythons); install one (e.g. 'pyenv install 3.10' or your distribution's python3.10 and python3.10-venv packages) or set PYTHON=/path/to/python3.10, then re-run" >&2
    exit 1
  fi
  echo "setup: creating .venv with $python (Python $(supported_version "$python"))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

# One stamp per requirements file, holding the hash it was installed at: a plain set-up after
# `--dev --export` (as the quickstart does after the tests) installs nothing.
stamps="$venv/.installed"
mkdir -p "$stamps"
stale=()
for f in "${req_files[@]}" "${no_deps_files[@]}"; do
  if [ "$(cat "$stamps/$(basename "$f")" 2>/dev/null || true)" != "$(sha256sum < "$f")" ]; then
    stale+=("$f")
  fi
done
if [ ${#stale[@]} -gt 0 ]; then
  echo "setup: installing $(basename -a "${stale[@]}" | tr '\n' ' ')"
  args=()
  for f in "${req_files[@]}"; do
    if [ "$gpu" = 1 ] && [ "$f" = "$root/requirements.txt" ]; then
      # Everything but pip's MPICH, as the Dockerfile does (docs/gpu.md says why).
      { grep -v -E '^mpich==' "$f" || true; } > "$venv/requirements-without-mpich.txt"
      f="$venv/requirements-without-mpich.txt"
    fi
    args+=(-r "$f")
  done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
  for f in "${no_deps_files[@]}"; do
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$f"
  done
  for f in "${req_files[@]}" "${no_deps_files[@]}"; do
    sha256sum < "$f" > "$stamps/$(basename "$f")"
  done
fi

# System packages the tests use (a real Slurm; network namespaces with an sshd each), where
# this user can install them (root, apt); without them those tests skip and say what is missing.
missing=()
if [ ${#apt_packages[@]} -gt 0 ] && [ "$EUID" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed$" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y "${missing[@]}"; } \
    >/dev/null || echo "setup: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
fi

# The GPU stack: pip's MPICH out of the environment (mpi4py then runs the system's Open MPI,
# the MPI that NNabla's multi-GPU communicator opens), then each piece checked as the CUDA
# extension will look for it.
if [ "$gpu" = 1 ]; then
  if "$venv/bin/python" -m pip show --quiet mpich >/dev/null 2>&1; then
    echo "setup: removing pip's mpich (NNabla's multi-GPU communicator needs Open MPI)"
    "$venv/bin/python" -m pip uninstall --quiet --yes mpich
  fi
  echo "setup: the GPU stack (python -m utils.process.gpu_stack):"
  if ! (cd "$root" && "$venv/bin/python" -m utils.process.gpu_stack); then
    echo "setup: NNabla's CUDA extension is installed but cannot run here until the pieces marked MISSING are installed (see docs/gpu.md)" >&2
    exit 1
  fi
fi
