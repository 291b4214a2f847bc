"""Shifted test data for the OOD evaluation suite: corrupted copies and OOD sets.

Pure functions of (data, names, severity, seed, size); nothing is downloaded.

Covariate shift (``corruptions`` / ``severity`` keys): a CIFAR-10-C-style corrupted
copy of (a fixed subset of) the global test set, made with the 19 corruptions of
``imagecorruptions-imaug`` (Hendrycks & Dietterich's ImageNet-C code, kept working on
current numpy/scikit-image). Notes:

- Severity constants (``corruption-constants``): the library's are ImageNet-C's, tuned for
  224 px images and much harsher at 32 px (Gaussian noise std 0.08-0.38 against CIFAR-10-C's
  0.04-0.10). ``cifar`` uses CIFAR-10-C's constants (``datasets/cifar_c.py``) for the 14
  corruptions that can be rebuilt offline; motion_blur, snow, frost, spatter and
  elastic_transform keep ImageNet-C's. ``auto`` (default): ``cifar`` for images of 32 px
  and below, ``imagenet`` above.
- ``corrupt()`` refuses images under 32 px. The corruption functions themselves work at
  28x28 (all 19 are checked in tests/test_ood.py), so images of 28 px or more are
  corrupted at their own size by calling the functions directly (no resize blur);
  smaller images are resized up to 32 px, corrupted and resized back.
- Grayscale images are replicated to 3 channels (HxWx3 uint8, what the library expects)
  and converted back with ITU-R 601 luma (some corruptions, e.g. frost, add colour).
- ``severity`` 1..5 is one level; ``0`` gives image i the level ``i % 5 + 1``, i.e. the
  mean over all five levels at the cost of one (CIFAR-10-C papers report either).
- ``spatter`` divides by the largest drop value, which is 0 when a small image draws no
  drop at all (a library bug that 224 px images never hit): those pixels come out NaN. They
  are replaced by the input pixel, which is what a drop-free spatter layer means.
- Seeding: every image is corrupted under its own seed, derived from (seed, corruption,
  severity, index); the library's global-numpy randomness and its ``seed`` arguments
  (glass_blur, impulse_noise) are both set, so the result is a function of the inputs.
- Cache: ``<data-root>/corrupted/<dataset>-<content hash>/<name>-s<severity>-seed<seed>-v<N>.pt``
  (uint8 tensors, written atomically); a later run, or another seed of a sweep, loads it.

Semantic shift (``ood-datasets`` key): test images of another dataset of the registry
(e.g. ``mnist`` for a ``fashion-mnist`` task and vice versa), or an OOD-only folder set
that the user has (``svhn``, ``textures``, ``lsun``, ``lsun-r``, ``isun``, ``places365``:
see ``OOD_FOLDERS``), converted to the in-distribution input shape (channels, size) and
normalized with the in-distribution mean/std, i.e. exactly as the model sees ID inputs.
Synthetic OOD sets, made offline in the style of Hendrycks et al.'s Outlier Exposure
evaluation (also in OpenOOD's noise sets), seeded by ``corruption-seed``:
``noise-gaussian`` (pixels N(0.5, 0.25^2) clipped to [0, 1], i.e. OE's N(0, 0.5^2) on
[-1, 1]), ``noise-rademacher`` (each pixel 0 or 1 with probability 1/2) and ``blobs``
(Bernoulli(0.7) pixels, Gaussian blur sigma 1.5, values below 0.75 set to 0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from common.progress import LogProgress

from .registry import ArrayDataset, DataBundle, DataError, load_dataset, resolve_root

SEVERITIES = (1, 2, 3, 4, 5)
CONSTANTS = ("auto", "cifar", "imagenet")
CACHE_VERSION = 2  # bump when the generated images change: old cache files are then ignored
NATIVE_MIN_SIDE = 28  # corruptions verified at this size and above
LIBRARY_HINT = "pip install imagecorruptions-imaug (or corrupt-tta)"
# OOD-only image folders under data-root (FOOGD / OpenOOD layouts); any image files below.
OOD_FOLDERS = {
    "textures": "dtd/images",
    "lsun": "LSUN",
    "lsun-r": "LSUN_resize",
    "isun": "iSUN",
    "places365": "places365",
}


def corruption_library():
    """(name -> function) of the installed corruption library, in the canonical order."""
    try:
        from imagecorruptions import corruption_dict, get_corruption_names
    except ImportError:
        try:
            from corrupt_tta import corruption_dict  # same 19 functions, same names

            return dict(corruption_dict)
        except ImportError:
            raise DataError(f"corruptions need a corruption library: {LIBRARY_HINT}") from None
    return {name: corruption_dict[name] for name in get_corruption_names("all")}


def corruption_names(spec: str) -> list[str]:
    """``""`` -> [], ``all`` -> the 19, ``common`` -> the 15 benchmark ones, else a comma list."""
    spec = spec.strip()
    if not spec:
        return []
    known = list(corruption_library())
    if spec == "all":
        return known
    if spec == "common":
        return known[:15]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise DataError(f"unknown corruption(s) {bad}: pass all, common or a comma list of {known}")
    return list(dict.fromkeys(names))


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _to_rgb_u8(img: np.ndarray) -> np.ndarray:
    """[C,H,W] uint8 -> [H,W,3] uint8."""
    hwc = np.transpose(img, (1, 2, 0))
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else np.ascontiguousarray(hwc)


def _from_rgb(out: np.ndarray, channels: int) -> np.ndarray:
    """[H,W,3] float/uint8 in [0,255] -> [C,H,W] uint8 (luma for C=1)."""
    out = np.clip(np.asarray(out, dtype=np.float64), 0, 255)
    if channels == 1:
        out = (out @ np.array([0.299, 0.587, 0.114]))[..., None]
    return np.round(out).astype(np.uint8).transpose(2, 0, 1)


def constants_for(spec: str, side: int) -> str:
    """``auto`` -> ``cifar`` for images of 32 px and below, else ``imagenet``."""
    if spec not in CONSTANTS:
        raise DataError(f"corruption-constants must be one of {CONSTANTS}, got '{spec}'")
    return ("cifar" if side <= 32 else "imagenet") if spec == "auto" else spec


def _library_call(fn, rgb: np.ndarray, level: int, kwargs: dict):
    from PIL import Image

    try:
        return fn(Image.fromarray(rgb), level, **kwargs)
    except TypeError:  # a library whose function takes no seed argument
        return fn(rgb, level)


def corrupt_images(images: torch.Tensor, name: str, severity: int, seed: int,
                   constants: str = "imagenet", tick=None) -> torch.Tensor:
    """Corrupt uint8 images [N,C,H,W] (C = 1 or 3) with ``name`` at ``severity``
    (0 = cycle 1..5 over the images) with ``constants`` (``cifar`` or ``imagenet``, see the
    module docstring); returns uint8 of the same shape. Deterministic. ``tick()`` after
    each image (progress)."""
    from .cifar_c import CIFAR_C

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"corruptions need uint8 images [N,1|3,H,W], got {images.dtype} {tuple(images.shape)}")
    fn = corruption_library()[name]
    cifar_fn = CIFAR_C.get(name) if constants == "cifar" else None
    idx = list(corruption_library()).index(name)
    n, c, h, w = images.shape
    small = min(h, w) < NATIVE_MIN_SIDE
    src = images
    if small:  # resize up, corrupt, resize back (see module docstring)
        src = F.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False)
        src = src.round().clamp(0, 255).to(torch.uint8)
    src_np = src.numpy()
    out = np.empty_like(src_np)
    state = np.random.get_state()
    try:
        for i in range(n):
            level = severity if severity else SEVERITIES[i % 5]
            s = _seed(seed, idx, severity, i)
            np.random.seed(s)
            kwargs = {"seed": s} if name in ("glass_blur", "impulse_noise") else {}
            rgb = _to_rgb_u8(src_np[i])
            with np.errstate(divide="ignore", invalid="ignore"):  # spatter's 0/0, handled below
                res = cifar_fn(rgb, level) if cifar_fn is not None else _library_call(fn, rgb, level, kwargs)
            res = np.asarray(res, dtype=np.float64)
            if not np.isfinite(res).all():  # spatter on a small image that drew no drop: 0/0
                res = np.where(np.isfinite(res), res, rgb)
            out[i] = _from_rgb(res, c)
            if tick:
                tick()
    finally:
        np.random.set_state(state)
    result = torch.from_numpy(out)
    if small:
        result = F.interpolate(result.float(), size=(h, w), mode="bilinear", align_corners=False)
        result = result.round().clamp(0, 255).to(torch.uint8)
    return result


def fixed_subset(data, max_samples: int, seed: int = 0) -> np.ndarray:
    """Indices of a fixed (seeded, sorted) subset of at most ``max_samples`` items."""
    n = len(data)
    if max_samples <= 0 or max_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])


def _uint8_images(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, ArrayDataset) or data.x.dtype != torch.uint8:
        raise DataError(f"{what}: the OOD suite needs a dataset held as uint8 tensors (mnist, fashion-mnist, "
                        f"digits, cifar10, cifar100), got {type(data).__name__}")
    return data.x, data.y


def corrupted_sets(bundle: DataBundle, names: list[str], severity: int, seed: int, max_samples: int,
                   data_root: str = "", constants: str = "auto") -> dict[str, ArrayDataset]:
    """name -> corrupted copy of a fixed subset of ``bundle.test``, normalized like it; cached."""
    if severity not in (0, *SEVERITIES):
        raise DataError(f"severity must be 0 (all five) or 1..5, got {severity}")
    x, y = _uint8_images(bundle.test, f"corruptions on {bundle.name}")
    idx = torch.as_tensor(fixed_subset(bundle.test, max_samples))
    x, y = x[idx], y[idx]
    constants = constants_for(constants, max(x.shape[2:]))
    digest = hashlib.sha1(x.numpy().tobytes()).hexdigest()[:12]
    folder = resolve_root(data_root) / "corrupted" / f"{bundle.name}-{digest}"
    out = {}
    progress = LogProgress(f"corrupting {len(x)} test images", len(names) * len(x), "image")
    for name in names:
        tag = "" if constants == "imagenet" else f"-{constants}"  # imagenet: the older files' names
        path = folder / f"{name}{tag}-s{severity}-seed{seed}-v{CACHE_VERSION}.pt"
        images = None
        if path.exists():
            try:
                images = torch.load(path, weights_only=True)
            except Exception:  # a damaged cache file is rebuilt
                images = None
            if images is not None and tuple(images.shape) != tuple(x.shape):
                images = None
        if images is None:
            images = corrupt_images(x, name, severity, seed, constants, progress.tick)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
            torch.save(images, tmp)
            tmp.replace(path)  # atomic: concurrent runs never read half a file
        else:
            progress.tick(len(x))  # cached
        ds = ArrayDataset(images, y)
        ds.mean, ds.std = bundle.test.mean, bundle.test.std
        out[name] = ds
    return out


def _match_shape(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 [N,C,H,W] -> uint8 [N,*shape]: channels by luma/replication, size by bilinear resize."""
    c, h, w = shape
    x = x.unsqueeze(1) if x.ndim == 3 else x
    xf = x.float()
    if xf.shape[1] != c:
        if c == 1:
            xf = (xf * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            xf = xf[:, :1].repeat(1, c, 1, 1)
    if tuple(xf.shape[2:]) != (h, w):
        xf = F.interpolate(xf, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return xf.round().clamp(0, 255).to(torch.uint8)


def _folder_images(folder: Path, max_samples: int, shape) -> torch.Tensor:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    if not files:
        raise DataError(f"no images under {folder}")
    files = [files[i] for i in fixed_subset(files, max_samples)]
    c, h, w = shape
    imgs = []
    for f in files:
        with Image.open(f) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
            imgs.append(arr[None] if c == 1 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(imgs))


SYNTHETIC_OOD = ("noise-gaussian", "noise-rademacher", "blobs")
SYNTHETIC_SIZE = 2000  # images per synthetic set when ood-max-samples is 0 (= all)


def synthetic_images(name: str, n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """uint8 [n, *shape] images of the synthetic OOD set ``name`` (channels drawn independently)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(_seed(seed, SYNTHETIC_OOD.index(name)))
    size = (n, *shape)
    if name == "noise-gaussian":
        x = np.clip(rng.normal(0.5, 0.25, size), 0, 1)
    elif name == "noise-rademacher":
        x = rng.binomial(1, 0.5, size).astype(np.float64)
    elif name == "blobs":
        x = gaussian_filter(rng.binomial(1, 0.7, size).astype(np.float64), sigma=(0, 0, 1.5, 1.5))
        x[x < 0.75] = 0.0
    else:
        raise DataError(f"unknown synthetic OOD set '{name}': pass one of {SYNTHETIC_OOD}")
    return torch.from_numpy(np.round(x * 255).astype(np.uint8))


def ood_names(spec: str) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))


def known_ood_names() -> list[str]:
    from .registry import DATASETS

    return sorted(set(DATASETS) | set(OOD_FOLDERS) | {"svhn"} | set(SYNTHETIC_OOD))


def ood_set(name: str, bundle: DataBundle, max_samples: int, data_root: str = "", download: bool = False,
            seed: int = 0) -> ArrayDataset:
    """Test images of the OOD set ``name`` shaped and normalized like ``bundle``'s inputs.
    Labels are all -1 (unused)."""
    if name == bundle.name:
        raise DataError(f"ood-datasets contains the in-distribution dataset '{name}'")
    root = resolve_root(data_root)
    shape = tuple(bundle.input_shape)
    if name in SYNTHETIC_OOD:
        x = synthetic_images(name, max_samples or SYNTHETIC_SIZE, shape, seed)
    elif name in OOD_FOLDERS:
        folder = root / OOD_FOLDERS[name]
        if not folder.exists():
            raise DataError(f"OOD set '{name}' not found: put its images under {folder}")
        x = _folder_images(folder, max_samples, shape)
    elif name == "svhn":
        try:
            from torchvision.datasets import SVHN

            svhn = SVHN(str(root / "svhn"), split="test", download=download)
        except Exception as err:
            raise DataError(f"OOD set 'svhn' not found: put test_32x32.mat under {root / 'svhn'} "
                            f"({type(err).__name__})") from None
        idx = fixed_subset(svhn.data, max_samples)
        x = torch.from_numpy(svhn.data[idx])
    else:
        other = load_dataset(name, data_root, download)
        x, _ = _uint8_images(other.test, f"OOD set '{name}'")
        x = x[torch.as_tensor(fixed_subset(other.test, max_samples))]
    x = _match_shape(x, shape)
    ds = ArrayDataset(x, torch.full((len(x),), -1, dtype=torch.long))
    ds.mean, ds.std = bundle.test.mean, bundle.test.std
    return ds


def id_subset(bundle: DataBundle, max_samples: int) -> ArrayDataset:
    """The in-distribution side of OOD detection: a fixed subset of the global test set."""
    return bundle.test.subset(fixed_subset(bundle.test, max_samples))
