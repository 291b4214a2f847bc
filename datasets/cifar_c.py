"""CIFAR-10-C's severity constants for small images (Hendrycks & Dietterich 2019).

ImageNet-C (``imagecorruptions``) tunes each corruption's five levels for 224 px images;
CIFAR-10-C used a separate, milder set for 32 px (``make_cifar_c.py`` in the authors'
``robustness`` repository). The 14 corruptions below are those functions with the CIFAR
constants, written against the same helpers (``disk``, ``clipped_zoom``,
``plasma_fractal``) of the installed library. ``motion_blur``, ``snow``, ``frost``,
``spatter`` and ``elastic_transform`` need image assets or ImageMagick in the original
CIFAR code and keep the library's ImageNet-C constants (``datasets/shift.py`` says so
where it picks them). Each function takes an RGB uint8 array [H, W, 3] and a severity
1..5 and returns floats in [0, 255]; randomness comes from numpy's global state, which
the caller seeds per image.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np

GAUSSIAN = [0.04, 0.06, 0.08, 0.09, 0.10]
SHOT = [500, 250, 100, 75, 50]
IMPULSE = [0.01, 0.02, 0.03, 0.05, 0.07]
SPECKLE = [0.06, 0.1, 0.12, 0.16, 0.2]
GAUSSIAN_BLUR = [0.4, 0.6, 0.7, 0.8, 1.0]
GLASS = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]  # sigma, max delta, iterations
DEFOCUS = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]  # radius, alias blur
ZOOM = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)]
FOG = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]
CONTRAST = [0.75, 0.5, 0.4, 0.3, 0.15]
BRIGHTNESS = [0.05, 0.1, 0.15, 0.2, 0.3]
SATURATE = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)]
JPEG = [80, 65, 58, 50, 40]
PIXELATE = [0.95, 0.9, 0.85, 0.75, 0.65]


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 255.0


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1)


def gaussian_noise(x, s):
    x = _f(x)
    return np.clip(x + np.random.normal(size=x.shape, scale=GAUSSIAN[s - 1]), 0, 1) * 255


def shot_noise(x, s):
    c = SHOT[s - 1]
    return np.clip(np.random.poisson(_f(x) * c) / c, 0, 1) * 255


def impulse_noise(x, s):
    """Salt and pepper on a share ``c`` of the values, half each (skimage's ``s&p``)."""
    x, c = _f(x).copy(), IMPULSE[s - 1]
    u = np.random.random_sample(x.shape)
    x[u < c / 2] = 0.0
    x[(u >= c / 2) & (u < c)] = 1.0
    return x * 255


def speckle_noise(x, s):
    x = _f(x)
    return np.clip(x + x * np.random.normal(size=x.shape, scale=SPECKLE[s - 1]), 0, 1) * 255


def gaussian_blur(x, s):
    return np.clip(_blur(_f(x), GAUSSIAN_BLUR[s - 1]), 0, 1) * 255


def glass_blur(x, s):
    sigma, delta, iters = GLASS[s - 1]
    x = np.uint8(_blur(_f(x), sigma) * 255)
    h, w = x.shape[:2]
    for _ in range(iters):  # locally shuffle pixels
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dx, dy = np.random.randint(-delta, delta, size=(2,))
                i2, j2 = i + dy, j + dx
                x[i, j], x[i2, j2] = x[i2, j2].copy(), x[i, j].copy()
    return np.clip(_blur(x / 255.0, sigma), 0, 1) * 255


def defocus_blur(x, s):
    import cv2
    from imagecorruptions.corruptions import disk

    radius, alias = DEFOCUS[s - 1]
    x = _f(x).astype(np.float32)
    kernel = disk(radius=radius, alias_blur=alias)
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], -1)
    return np.clip(out, 0, 1) * 255


def zoom_blur(x, s):
    from imagecorruptions.corruptions import clipped_zoom

    x = _f(x).astype(np.float32)
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for z in ZOOM[s - 1]:
        out += clipped_zoom(x, z)[:h, :w]
    return np.clip((x + out) / (len(ZOOM[s - 1]) + 1), 0, 1) * 255


def fog(x, s):
    from imagecorruptions.corruptions import next_power_of_2, plasma_fractal

    c = FOG[s - 1]
    x = _f(x)
    h, w = x.shape[:2]
    max_val = x.max()
    x = x + c[0] * plasma_fractal(mapsize=next_power_of_2(max(h, w)), wibbledecay=c[1])[:h, :w][..., None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def contrast(x, s):
    x = _f(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * CONTRAST[s - 1] + means, 0, 1) * 255


def brightness(x, s):
    from skimage.color import hsv2rgb, rgb2hsv

    x = rgb2hsv(_f(x))
    x[:, :, 2] = np.clip(x[:, :, 2] + BRIGHTNESS[s - 1], 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def saturate(x, s):
    from skimage.color import hsv2rgb, rgb2hsv

    c = SATURATE[s - 1]
    x = rgb2hsv(_f(x))
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def jpeg_compression(x, s):
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(buf, "JPEG", quality=JPEG[s - 1])
    return np.asarray(Image.open(buf), dtype=np.float64)


def pixelate(x, s):
    from PIL import Image

    img = Image.fromarray(np.asarray(x, dtype=np.uint8))
    w, h = img.size
    c = PIXELATE[s - 1]
    img = img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(img, dtype=np.float64)


CIFAR_C = {f.__name__: f for f in (gaussian_noise, shot_noise, impulse_noise, speckle_noise, gaussian_blur,
                                    glass_blur, defocus_blur, zoom_blur, fog, contrast, brightness, saturate,
                                    jpeg_compression, pixelate)}
