"""Image folders on the user's disk: multi-domain sets and TinyImageNet.

Multi-domain layout (PACS, OfficeHome, DomainNet): ``<data-root>/<NAME>/<domain>/<class>/*.jpg``
with the same class folders in every domain. Each image's domain id is kept in the
bundle (``train_domains``) for domain partitioners. Without an official split, a fixed
stratified 20% of every domain is the global test set. Images are decoded lazily and
resized to ``IMAGE_SIZE`` (ImageNet normalization).

TinyImageNet: ``<data-root>/tiny-imagenet-200`` as distributed (train/<wnid>/images,
val/images + val_annotations.txt); the official val split is the global test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .registry import DataBundle, DataError, fixed_split, register

IMAGE_SIZE = 64
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}
MULTI_DOMAIN = {"pacs": "PACS", "officehome": "OfficeHome", "domainnet": "DomainNet"}


class FileDataset(Dataset):
    """Lazy (path, label) list -> normalized tensors of IMAGE_SIZE."""

    def __init__(self, files: list[Path], labels: np.ndarray):
        from torchvision.transforms import v2

        self.files, self.labels = files, np.asarray(labels, dtype=np.int64)
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize((IMAGE_SIZE, IMAGE_SIZE), antialias=True),
                v2.ToDtype(__import__("torch").float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), int(self.labels[i])

    def subset(self, idx) -> "FileDataset":
        return FileDataset([self.files[i] for i in idx], self.labels[idx])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)


def check_image_files(name: str, class_dirs: list[Path], files: list[Path]) -> None:
    """Fail in one line naming the path: a class folder without images, or a file that is
    not a readable image (its header is parsed, and ``verify`` checks what the format
    allows, e.g. PNG checksums). Called when a folder dataset is loaded, so the sweep's
    check and the server fail before any client trains on a file it cannot decode."""
    for folder in class_dirs:
        if not any(p.suffix.lower() in EXTENSIONS for p in folder.rglob("*")):
            raise DataError(f"{name}: class folder {folder} holds no images ({'/'.join(sorted(EXTENSIONS))}): "
                            "add images or remove the folder")
    for path in files:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as err:  # PIL raises many kinds for a broken file
            why = (str(err).splitlines() or [type(err).__name__])[0][:120]
            raise DataError(f"{name}: {path} is not a readable image ({why}): remove or replace it") from None


def _bundle(name, files, labels, domains, domain_names, classes, test=None):
    labels = np.asarray(labels, dtype=np.int64)
    data = FileDataset(files, labels)
    if test is None:
        # Stratify by (domain, class) so that every domain keeps its share.
        key = labels if domains is None else np.asarray(domains) * len(classes) + labels
        train_idx, test_idx = fixed_split(key)
        test = data.subset(test_idx)
        data, labels = data.subset(train_idx), labels[train_idx]
        domains = None if domains is None else np.asarray(domains)[train_idx]
    return DataBundle(
        name=name,
        train=data,
        test=test,
        train_labels=labels,
        num_classes=len(classes),
        input_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_domains=domains,
        domain_names=domain_names,
    )


def load_multi_domain(name: str, root: Path) -> DataBundle:
    base = root / MULTI_DOMAIN[name]
    if not base.is_dir():
        raise DataError(
            f"{name}: folder {base} not found: pass data-root=<folder holding "
            f"{MULTI_DOMAIN[name]}/<domain>/<class>/*.jpg>"
        )
    domain_dirs = sorted(d for d in base.iterdir() if d.is_dir())
    classes = sorted({c.name for d in domain_dirs for c in d.iterdir() if c.is_dir()})
    if not domain_dirs or not classes:
        raise DataError(f"{name}: {base} holds no <domain>/<class>/ image folders")
    files, labels, domains = [], [], []
    for d_id, d in enumerate(domain_dirs):
        for c_id, c in enumerate(classes):
            found = _images(d / c) if (d / c).is_dir() else []
            files += found
            labels += [c_id] * len(found)
            domains += [d_id] * len(found)
    if not files:
        raise DataError(f"{name}: no images (.jpg/.png) under {base}")
    check_image_files(name, [d / c for d in domain_dirs for c in classes if (d / c).is_dir()], files)
    return _bundle(name, files, labels, domains, [d.name for d in domain_dirs], classes)


for _name in MULTI_DOMAIN:
    register(_name)(lambda root, download=False, _n=_name: load_multi_domain(_n, root))


@register("tinyimagenet")
def load_tinyimagenet(root: Path, download: bool = False) -> DataBundle:
    base = root / "tiny-imagenet-200"
    ann = base / "val" / "val_annotations.txt"
    if not (base / "train").is_dir() or not ann.exists():
        raise DataError(
            f"tinyimagenet: {base}/train and {ann} not found: pass data-root=<folder "
            "holding the unzipped tiny-imagenet-200>"
        )
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in classes:
        found = _images(base / "train" / c)
        files += found
        labels += [index[c]] * len(found)
    val_files, val_labels = [], []
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            val_files.append(base / "val" / "images" / parts[0])
            val_labels.append(index[parts[1]])
    check_image_files("tinyimagenet", [base / "train" / c for c in classes], files + val_files)
    test = FileDataset(val_files, np.asarray(val_labels))
    return _bundle("tinyimagenet", files, labels, None, [], classes, test=test)
