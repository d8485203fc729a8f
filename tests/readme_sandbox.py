"""A folder where the commands of the README and of docs/ run as written, without ImageNet or
published weights.

It holds the repository's entries (symbolic links, so `python train.py` and `cfg/...` resolve
as in a checkout), a `.venv` of its own (see `isolated_venv`) and, under the names the pages
use, stand-ins for what a user brings:

- `train/`: the 1000 ImageNet WordNet-ID class folders, the first few with one demo photo each
  (empty class folders are allowed, with a warning), and `val/`: the first validation images
  under their official flat names, so the ImageNet ground truth labels them;
- `photo.jpg`, `photos/`: demo photos to classify;
- `101_ObjectCategories/`: a small fine-tuning dataset laid out as Caltech101 is, with its
  `BACKGROUND_Google` and `Faces_easy` folders;
- `flowers/train/` and `flowers/val/`: a user's own class folders (`OWN_CLASSES`), training
  and validation apart;
- the evaluation sets, each with all its class folders and a few demo photos
  (`EVAL_SET_IMAGES`): ImageNetV2's numbered folders, ImageNet-A's and -R's 200 and
  ImageNet-Sketch's 1000 WordNet-ID folders, and a `real.json` of the 50,000 validation
  images (the ground truth, one image left out);
- weight files named as the published ones, with random weights of the right architecture,
  layout and input channels (NHWC files with a zero 4th input channel, as mixed-precision
  training leaves them).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Tuple

from eval_fixtures import DEMO, REPO, make_weight_file
from eval_set_fixtures import save, wnid_folders, write_json
from PIL import Image

from utils.eval.sets import IMAGENET_A_CLASSES, IMAGENET_R_CLASSES
from utils.labels.imagenet import imagenet_val_ground_truth, imagenet_wnids
from utils.weights.files import (
    convert_layout,
    read_parameters,
    set_input_channels,
    write_parameters,
)
from utils.weights.published import PUBLISHED

# file name -> (architecture, layout) of the weight files the README's commands read: the
# published ones as published, and two of a user's own.
WEIGHT_STAND_INS: Dict[str, Tuple[str, str]] = {
    **{name: (PUBLISHED[name].arch, "nhwc4" if PUBLISHED[name].channel_last else "nchw3")
       for name in ("rn50-nhwc_cos90.h5", "rn50-nhwc_mixup250.h5", "rn50-nhwc.h5",
                    "mbnv3_large_nchw_cos90.v2.h5", "se_resnet50_by_author.h5")},
    "rn50.h5": ("resnet50", "nchw3"),
    "b0.h5": ("efficientnet_b0", "nchw3"),
}
TRAIN_IMAGES = 16
VAL_IMAGES = 16
# folder -> its class folders; the first EVAL_SET_IMAGES of each hold one demo photo
EVAL_SETS: Dict[str, list] = {
    "imagenetv2-matched-frequency-format-val": [str(i) for i in range(1000)],
    "imagenet-a": wnid_folders(sorted(IMAGENET_A_CLASSES)),
    "imagenet-r": wnid_folders(sorted(IMAGENET_R_CLASSES)),
    "sketch": list(imagenet_wnids()),
}
EVAL_SET_IMAGES = 6
REAL_LEFT_OUT = 3  # the validation image whose ReaL list is empty
# The fine-tuning walkthrough's own class folders: 2 training images and 1 validation image each.
OWN_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
NOT_LINKED = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}


def demo_photos(count: int) -> list:
    """The first `count` demo training photos, in a fixed order over the classes."""
    folders = sorted(p for p in (DEMO / "train").iterdir() if p.is_dir())
    per_class = [sorted(c.iterdir()) for c in folders]
    return [per_class[i % len(folders)][i // len(folders)] for i in range(count)]


def weight_stand_in(path: Path, arch: str, layout: str) -> Path:
    """Random weights for `arch` saved in `layout` ('nchw3' or 'nhwc4') with 1000 classes."""
    make_weight_file(path, arch, num_classes=1000)
    if layout == "nhwc4":
        params = set_input_channels(convert_layout(read_parameters(str(path)), True), 4, True)
        write_parameters(str(path), params)
    return path


def isolated_venv(venv: Path, source: Path = Path(sys.prefix)) -> Path:
    """A virtual environment at `venv` that imports the packages of `source` (a .pth file) and
    runs its programs and libraries (`mpirun`, `tensorboard`, `libmpi.so`: symbolic links), but
    whose own site-packages and install stamps are its own: a set-up command run in the sandbox
    installs, if at all, into it, never into `source`, the environment running the tests."""
    home = dict(line.split(" = ", 1) for line in
                (source / "pyvenv.cfg").read_text().splitlines() if " = " in line)["home"]
    base = Path(home) / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    Path(purelib, "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    for folder in ("bin", "lib", "include", "share"):  # programs, MPI's libmpi.so, ...
        (venv / folder).mkdir(exist_ok=True)
        for entry in (source / folder).iterdir() if (source / folder).is_dir() else ():
            if not (venv / folder / entry.name).exists() and not entry.name.startswith(
                    ("activate", "Activate", "python", "pip")):
                (venv / folder / entry.name).symlink_to(entry)
    if (source / ".installed").is_dir():  # what is installed: set-up installs nothing more
        shutil.copytree(source / ".installed", venv / ".installed")
    return venv


def build(root: Path) -> Path:
    """Fill `root` as described in the module docstring; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED and not entry.name.startswith("tmp."):
            (root / entry.name).symlink_to(entry)
    isolated_venv(root / ".venv")

    photos = demo_photos(TRAIN_IMAGES + 4 + 30)
    for i, wnid in enumerate(imagenet_wnids()):
        (root / "train" / wnid).mkdir(parents=True)
        if i < TRAIN_IMAGES:
            shutil.copy(photos[i], root / "train" / wnid / f"{wnid}_{i + 1}.JPEG")
    (root / "val").mkdir()
    for i in range(1, VAL_IMAGES + 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        shutil.copy(DEMO / "val" / name, root / "val" / name)

    shutil.copy(photos[TRAIN_IMAGES], root / "photo.jpg")
    (root / "photos").mkdir()
    for i, src in enumerate(photos[TRAIN_IMAGES + 1:TRAIN_IMAGES + 4]):
        shutil.copy(src, root / "photos" / f"photo_{i}.jpg")

    caltech = root / "101_ObjectCategories"
    for src in photos[TRAIN_IMAGES + 4:]:  # 3 images in each of the 10 demo classes
        (caltech / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, caltech / src.parent.name / src.name)
    for folder in ("BACKGROUND_Google", "Faces_easy"):
        (caltech / folder).mkdir()
        for i, src in enumerate(photos[:2]):
            shutil.copy(src, caltech / folder / f"image_{i:04d}.jpg")

    for i, name in enumerate(OWN_CLASSES):  # 2 demo photos of one class per folder
        for split, first, count in (("train", 0, 2), ("val", 2, 1)):
            (root / "flowers" / split / name).mkdir(parents=True)
            for j in range(first, first + count):
                shutil.copy(photos[i + j * 10], root / "flowers" / split / name / f"{j}.jpg")

    for name, classes in EVAL_SETS.items():
        for i, folder in enumerate(classes):
            (root / name / folder).mkdir(parents=True)
            if i < EVAL_SET_IMAGES:  # ImageNet-Sketch's PNG files are named .JPEG too
                with Image.open(photos[i]) as img:
                    save(img.convert("RGB"), str(root / name / folder / f"{i}.JPEG"),
                         "PNG" if i % 2 else "JPEG")
    real = [[label] for label in imagenet_val_ground_truth()]
    real[REAL_LEFT_OUT - 1] = []
    write_json(root / "real.json", real)

    made: Dict[Tuple[str, str], Path] = {}
    for name, kind in WEIGHT_STAND_INS.items():
        if kind in made:  # the same weights under another name
            os.link(made[kind], root / name)
        else:
            made[kind] = weight_stand_in(root / name, *kind)
    return root
