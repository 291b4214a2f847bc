"""Image folders on the user's disk: any class tree, multi-domain sets, TinyImageNet.

``image-folder``: ``<data-root>/<class>/<image>`` (any image PIL reads, in subfolders
too); ``<data-root>/test/<class>/<image>``, if present, is the global test set, else a
fixed stratified 20%.

Multi-domain layout (PACS, OfficeHome, DomainNet): ``<data-root>/<NAME>/<domain>/<class>/*.jpg``
with the same class folders in every domain. Each image's domain id is kept in the
bundle (``train_domains``) for domain partitioners. Without an official split, a fixed
stratified 20% of every domain is the global test set.

Images are decoded lazily and resized to ``image-size`` pixels square (ImageNet
normalization).

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
    """Lazy (path, label) list -> normalized tensors of ``size`` x ``size`` pixels."""

    def __init__(self, files: list[Path], labels: np.ndarray, size: int = IMAGE_SIZE):
        from torchvision.transforms import v2

        self.files, self.labels, self.size = files, np.asarray(labels, dtype=np.int64), size
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize((size, size), antialias=True),
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
        return FileDataset([self.files[i] for i in idx], self.labels[idx], self.size)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)


def check_image_files(name: str, class_dirs: list[Path], files: list[Path]) -> None:
    """Fail in one line naming the path: a class folder without images, or a file that is
    not a readable image: ``verify`` checks what the format allows (PNG checksums), then
    the image is decoded in full (a truncated JPEG or BMP, or a PNG whose compressed data
    is corrupt, fails only there). Called when a folder dataset is loaded, so the sweep's
    check and the server fail before any client trains on a file it cannot decode."""
    for folder in class_dirs:
        if not any(p.suffix.lower() in EXTENSIONS for p in folder.rglob("*")):
            raise DataError(f"{name}: class folder {folder} holds no images ({'/'.join(sorted(EXTENSIONS))}): "
                            "add images or remove the folder")
    for path in files:
        try:
            with Image.open(path) as img:
                img.verify()
            with Image.open(path) as img:  # verify leaves the image unusable: open again to decode
                img.load()
        except Exception as err:  # PIL raises many kinds for a broken file
            why = (str(err).splitlines() or [type(err).__name__])[0][:120]
            raise DataError(f"{name}: {path} is not a readable image ({why}): remove or replace it") from None


def _bundle(name, files, labels, domains, domain_names, classes, size, test=None):
    labels = np.asarray(labels, dtype=np.int64)
    data = FileDataset(files, labels, size)
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
        input_shape=(3, size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_domains=domains,
        domain_names=domain_names,
    )


def _class_tree(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Files and labels of ``folder/<class>/...`` for the given class order."""
    files, labels = [], []
    for c_id, c in enumerate(classes):
        found = _images(folder / c) if (folder / c).is_dir() else []
        files += found
        labels += [c_id] * len(found)
    return files, labels


@register("image-folder")
def load_image_folder(root: Path, download: bool = False, image_size: int = IMAGE_SIZE) -> DataBundle:
    """``<root>/<class>/<image>``, with ``<root>/test/<class>/<image>`` as the test set if present."""
    if not root.is_dir():
        raise DataError(f"image-folder: folder {root} not found: pass data-root=<folder holding <class>/<image>>")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name != "test")
    files, labels = _class_tree(root, classes)
    if len(classes) < 2 or not files:
        raise DataError(f"image-folder: {root} needs two or more <class>/ folders of images (.jpg, .png, .bmp), "
                        f"found {len(classes)} class folders and {len(files)} images")
    check_image_files("image-folder", [root / c for c in classes], files)
    test = None
    if (root / "test").is_dir():
        extra = sorted({d.name for d in (root / "test").iterdir() if d.is_dir()} - set(classes))
        if extra:
            raise DataError(f"image-folder: {root / 'test'} has classes {extra} that the training folders lack")
        test_files, test_labels = _class_tree(root / "test", classes)
        if not test_files:
            raise DataError(f"image-folder: {root / 'test'} holds no <class>/<image> files: fill or remove it")
        check_image_files("image-folder", [root / "test" / c for c in classes if (root / "test" / c).is_dir()],
                          test_files)
        test = FileDataset(test_files, np.asarray(test_labels), image_size)
    return _bundle("image-folder", files, labels, None, [], classes, image_size, test=test)


def load_multi_domain(name: str, root: Path, image_size: int = IMAGE_SIZE) -> DataBundle:
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
    return _bundle(name, files, labels, domains, [d.name for d in domain_dirs], classes, image_size)


for _name in MULTI_DOMAIN:
    register(_name)(lambda root, download=False, image_size=IMAGE_SIZE, _n=_name:
                    load_multi_domain(_n, root, image_size))


@register("tinyimagenet")
def load_tinyimagenet(root: Path, download: bool = False, image_size: int = IMAGE_SIZE) -> DataBundle:
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
    test = FileDataset(val_files, np.asarray(val_labels), image_size)
    return _bundle("tinyimagenet", files, labels, None, [], classes, image_size, test=test)
