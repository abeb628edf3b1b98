"""Procedural chest radiographs from several hospitals ("sites").

Each image is a PA (or, for bedside units, AP) chest film drawn from a parametric anatomy:
body outline and soft tissue, two lungs with vessel markings, heart and mediastinum, spine,
posterior and anterior ribs, clavicles, humeral heads, diaphragm domes with a gastric bubble,
breast shadows, and benign look-alikes (nipple shadows, calcified granulomas, ECG leads).
Label 1 means a *finding*: a nodule, mass or patchy consolidation inside a lung.

A site is two things:

- an acquisition profile: exposure and contrast of the characteristic curve, gamma,
  detector blur, quantum noise, detector resolution, collimation borders, burned-in text
  markers, and (for one archive) inverted polarity (MONOCHROME1 stored raw);
- a population: sex mix, age distribution, prevalence of findings, and the rate of the
  "PORTABLE" marker. At ``city`` the portable marker goes with sickness (a shortcut a model
  can learn and a bias audit can find); elsewhere it does not.

The default pair is source ``city`` -> target ``rural``. The lesion is drawn by the same
anatomy code at every site, so the label signal is shared; what differs is how the detector
renders it (rural: lower resolution, more blur and noise, flatter contrast with a different
gamma, tight collimation, other markers). That shift is real (a source-only model loses
AUROC on rural) and reducible (noise/blur/gamma augmentation and feature alignment recover
part of it) -- ``tests/datasets/test_shift.py`` measures both.

Coordinates: x runs left to right across image columns, y top to bottom, both in [-1, 1] of
the image; the patient's right is on the image left (standard PA display).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._common import (
    SynthDatasetBase,
    check_domain,
    check_size,
    export_generic,
    gaussian_noise,
    glyph,
    make_rng,
    paste_glyph,
)

__all__ = [
    "DOMAINS", "DEFAULT_SOURCE", "DEFAULT_TARGET", "ATTRIBUTES", "MASK_CLASSES", "SiteProfile",
    "PROFILES", "sample", "SynthDataset", "export",
]

DEFAULT_SIZE = 64
MIN_SIZE = 16
ATTRIBUTES: tuple[str, ...] = ("sex", "age", "site", "portable")
#: Values of the ``mask`` label map. Lesion pixels lie inside the lung, so ``mask >= 1`` is the lung.
MASK_CLASSES: tuple[str, ...] = ("background", "lung", "lesion")


@dataclass(frozen=True)
class SiteProfile:
    """Acquisition and population of one hospital site.

    Intensities are on the display scale [0, 1] (1 = white, dense bone in standard polarity).
    Lengths (``blur``, margins) are fractions of the image width so they scale with ``size``.
    """

    name: str
    description: str
    # population
    prevalence: float          # P(finding)
    female: float              # P(sex == "F")
    age_mean: float            # years
    age_sd: float              # years
    portable_if_finding: float  # P(portable marker | finding)
    portable_if_normal: float   # P(portable marker | no finding)
    # acquisition
    exposure: float            # centre of the characteristic curve, in attenuation units
    contrast: float            # slope of the characteristic curve
    gamma: float               # display gamma applied after the curve
    noise: float               # quantum-noise sd at mid-grey
    blur: float                # detector blur sd, fraction of image width
    resolution: float          # detector sampling as a fraction of ``size`` (1 = full)
    collimation: tuple[float, float]  # range of border width per side, fraction of the image
    invert: bool               # stored with inverted polarity (MONOCHROME1 shown raw)
    rotation_sd: float         # patient rotation sd, degrees
    ap_fraction: float         # fraction of AP (magnified heart, low inspiration) films
    marker_corner: str         # where the laterality marker is burned in: "tl", "tr", "bl", "br"
    text_lines: int            # burned-in text-like lines (patient banner) at the bottom
    leads: float               # P(ECG leads / lines visible)


PROFILES: dict[str, SiteProfile] = {
    "city": SiteProfile(
        name="city", description="urban hospital, modern flat-panel DR room",
        prevalence=0.35, female=0.5, age_mean=52, age_sd=17,
        portable_if_finding=0.45, portable_if_normal=0.10,
        exposure=0.36, contrast=7.0, gamma=1.0, noise=0.015, blur=0.003, resolution=1.0,
        collimation=(0.0, 0.02), invert=False, rotation_sd=2.0, ap_fraction=0.1,
        marker_corner="tl", text_lines=0, leads=0.1,
    ),
    "rural": SiteProfile(
        name="rural", description="rural hospital, ageing computed-radiography (CR) plates",
        prevalence=0.40, female=0.45, age_mean=61, age_sd=15,
        portable_if_finding=0.15, portable_if_normal=0.15,
        exposure=0.31, contrast=5.0, gamma=0.8, noise=0.035, blur=0.007, resolution=0.6,
        collimation=(0.04, 0.11), invert=False, rotation_sd=4.0, ap_fraction=0.2,
        marker_corner="br", text_lines=2, leads=0.1,
    ),
    "teaching": SiteProfile(
        name="teaching", description="teaching-hospital archive stored as MONOCHROME1 (inverted)",
        prevalence=0.30, female=0.55, age_mean=46, age_sd=18,
        portable_if_finding=0.05, portable_if_normal=0.05,
        exposure=0.36, contrast=6.0, gamma=1.1, noise=0.025, blur=0.005, resolution=0.8,
        collimation=(0.01, 0.04), invert=True, rotation_sd=2.0, ap_fraction=0.05,
        marker_corner="tr", text_lines=1, leads=0.05,
    ),
    "icu": SiteProfile(
        name="icu", description="intensive-care bedside (portable AP) films",
        prevalence=0.55, female=0.4, age_mean=66, age_sd=14,
        portable_if_finding=1.0, portable_if_normal=1.0,
        exposure=0.33, contrast=5.0, gamma=1.2, noise=0.04, blur=0.008, resolution=0.7,
        collimation=(0.02, 0.08), invert=False, rotation_sd=6.0, ap_fraction=1.0,
        marker_corner="tl", text_lines=1, leads=0.8,
    ),
}

DOMAINS: tuple[str, ...] = tuple(PROFILES)
DEFAULT_SOURCE = "city"
DEFAULT_TARGET = "rural"


_ANATOMY_RES = 64  # anatomy is smooth: drawn at <= 64 px and upsampled, which keeps generation fast


@lru_cache(maxsize=16)
def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x (1, W) and y (H, 1), broadcastable."""
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1)[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1)[:, None]
    return x, y


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, linear over ``width``: a cheap anti-aliased edge."""
    out = d * (-1.0 / width)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             edge: float = 0.06) -> np.ndarray:
    """Soft ellipse occupancy in [0, 1]; x (1, W) and y (H, 1) keep the squares separable.

    The ramp constants are folded into the 1-D terms so only two full-size operations remain.
    """
    k = -1.0 / (2 * edge)
    a = ((x - cx) * (1.0 / rx)) ** 2 * k
    b = ((y - cy) * (1.0 / ry)) ** 2 * k + (0.5 - k)
    out = a + b
    return np.clip(out, 0.0, 1.0, out=out)


def _add_blob(att: np.ndarray, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float,
              amount: float, edge: float = 0.3, weight: np.ndarray | None = None) -> None:
    """Add a small soft disc of height ``amount`` to ``att`` in place, touching only its bounding box."""
    w, h = x.shape[1], y.shape[0]
    j0 = max(int((cx - r * 1.2 + 1) / 2 * w), 0)
    j1 = min(int((cx + r * 1.2 + 1) / 2 * w) + 2, w)
    i0 = max(int((cy - r * 1.2 + 1) / 2 * h), 0)
    i1 = min(int((cy + r * 1.2 + 1) / 2 * h) + 2, h)
    if j0 >= j1 or i0 >= i1:
        return
    blob = _ellipse(x[:, j0:j1], y[i0:i1], cx, cy, r, r, edge) * amount
    if weight is not None:
        blob *= weight[i0:i1, j0:j1]
    att[i0:i1, j0:j1] += blob


def _stripes(phase: np.ndarray, sharp: float) -> np.ndarray:
    """Periodic triangular bands (peak 1 at phase k + 0.5, width 1/sharp of a period), in place."""
    phase %= 1.0
    phase -= 0.5
    np.abs(phase, out=phase)
    phase *= -sharp
    phase += 1.0
    return np.clip(phase, 0.0, 1.0, out=phase)


def _line(canvas: np.ndarray, a: tuple[float, float], b: tuple[float, float], value: float,
          thickness: float) -> None:
    """Draw an anti-aliased line of ``value`` between pixel points a and b (sub-pixel precise)."""
    s = 16  # 4 fractional bits
    cv2.line(canvas, (int(a[0] * s), int(a[1] * s)), (int(b[0] * s), int(b[1] * s)), float(value),
             max(1, int(round(thickness))), cv2.LINE_AA, 4)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field (H, W): a ``cells`` x ``cells`` grid upsampled bicubically."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _lesion_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
                  kind: str) -> np.ndarray:
    """Peak-1 opacity (H, W) of one finding centred at (cx, cy): a round nodule or a lobulated patch."""
    if kind == "nodule":
        r = rng.uniform(0.09, 0.14)
        d2 = ((x - cx) / r) ** 2 + ((y - cy) / (r * rng.uniform(0.85, 1.15))) ** 2
        return np.clip(1.15 - d2 * 0.9, 0.0, 1.0) ** 0.8  # flat-topped with a soft rim
    field = np.zeros((y.shape[0], x.shape[1]), np.float32)
    for _ in range(rng.integers(2, 5)):  # consolidation: several overlapping blobs
        bx, by = cx + rng.normal(0, 0.06), cy + rng.normal(0, 0.07)
        r = rng.uniform(0.08, 0.15)
        field = np.maximum(field, np.clip(1.0 - (((x - bx) ** 2 + (y - by) ** 2) / r**2), 0, 1))
    return np.clip(field * 1.3, 0, 1)


def _burn_markers(img: np.ndarray, prof: SiteProfile, portable: bool, rng: np.random.Generator,
                  margin: tuple[int, int, int, int]) -> None:
    """Burn the laterality marker, banner text lines and the PORT(able) marker into ``img`` in place.

    Markers are drawn after collimation, in white, the way a console burns them in.
    """
    h, w = img.shape
    top, bottom, left, right = margin
    scale = round(w / 190.0, 3)
    th = max(1, int(round(w / 96)))
    pad = max(2, w // 32)

    def text(t: str, row: int, col: int, sc: float, value: float, thick: int, anchor: str) -> int:
        patch, _ = glyph(t, sc, thick)
        r0 = row if anchor[0] == "t" else row - patch.shape[0]
        c0 = col if anchor[1] == "l" else col - patch.shape[1]
        paste_glyph(img, patch, r0, c0, value)
        return patch.shape[0]

    corner = prof.marker_corner
    row = top + pad if corner[0] == "t" else h - bottom - pad
    col = left + pad if corner[1] == "l" else w - right - pad
    # PA films carry "R" over the patient's right; the bedside unit labels its AP films "L".
    mh = text("L" if prof.ap_fraction >= 1.0 else "R", row, col, scale * 1.1, 1.0, th, corner)
    base = h - bottom - pad - (mh if corner == "bl" else 0)
    for k in range(prof.text_lines):  # banner: the site string, then digits that look like a code
        t = prof.name.upper()[:6] if k == 0 else "".join(str(d) for d in rng.integers(0, 10, 6))
        base -= text(t, base, left + pad, scale * 0.7, 0.94, max(1, th - 1), "bl")
    if portable:
        text("PORT", top + pad + (mh if corner == "tr" else 0), w - right - pad, scale * 0.8, 1.0, th, "tr")


def sample(domain: str, index: int, *, seed: int = 0, size: int | tuple[int, int] = DEFAULT_SIZE,
           split: str | None = None) -> dict[str, Any]:
    """Generate chest radiograph ``index`` of site ``domain``.

    Deterministic per (domain, seed, split, index).

    Returns a dict:
      ``image`` float32 (1, H, W) in [0, 1]; ``label`` int (1 = finding);
      ``mask`` int64 (H, W) label map 0 = background, 1 = lung, 2 = lesion;
      ``lung_mask`` / ``lesion_mask`` uint8 (H, W) 0/1; ``domain`` str; ``index`` int;
      ``sex`` "F"/"M"; ``age`` int years; ``site`` str; ``portable`` int 0/1;
      ``finding`` str ("none", "nodule", "consolidation").
    """
    check_domain(domain, DOMAINS, "radiograph")
    h, w = check_size(size, MIN_SIZE)
    prof = PROFILES[domain]
    rng = make_rng(domain, seed, split, index)

    # --- patient -----------------------------------------------------------------------
    label = int(rng.random() < prof.prevalence)
    sex = "F" if rng.random() < prof.female else "M"
    age = int(np.clip(round(rng.normal(prof.age_mean + 4 * label, prof.age_sd)), 18, 95))
    portable = int(rng.random() < (prof.portable_if_finding if label else prof.portable_if_normal))
    ap = bool(rng.random() < max(prof.ap_fraction, 0.7 if portable else 0.0))
    kind = "none" if not label else ("nodule" if rng.random() < 0.5 else "consolidation")

    # --- anatomy, drawn at <= 64 px as an attenuation map (air 0, soft tissue ~0.4, bone more)
    f = min(1.0, _ANATOMY_RES / max(h, w))
    ah, aw = max(int(round(h * f)), 8), max(int(round(w * f)), 8)
    body = rng.uniform(0.93, 1.05) * (0.97 if sex == "F" else 1.0)
    tx, ty = rng.normal(0, 0.03), rng.normal(0.02, 0.03)
    gx, gy = _axes(ah, aw)
    x = (gx - tx) / body
    y = (gy - ty) / body

    def to_px(xn: float, yn: float) -> tuple[float, float]:
        """Anatomy coordinates -> (column, row) pixel coordinates of the anatomy canvas."""
        return (xn * body + tx + 1) / 2 * aw - 0.5, (yn * body + ty + 1) / 2 * ah - 0.5

    x2 = x * x

    # torso: a boxy super-ellipse (|x|^4 + |y|^4) with neck and shoulders
    torso = _ramp((x2 / (0.9 * rng.uniform(0.95, 1.05)) ** 2) ** 2 + (((y - 0.2) / 1.25) ** 2) ** 2 - 1.0, 0.08)
    soft = np.maximum(torso, _ellipse(x, y, 0.0, -1.05, 0.2, 0.45, edge=0.1))
    soft = np.maximum(soft, 0.9 * _ellipse(x, y, 0.0, -0.72, 1.15, 0.22, edge=0.1))
    att = soft * 0.40

    insp = rng.uniform(0.5, 0.6) * (0.9 if ap else 1.0)  # inspiration: lung height
    lung_top = -0.80
    cy = lung_top + insp
    lungs = np.zeros((ah, aw), np.float32)
    for side in (-1, 1):
        cx = side * rng.uniform(0.38, 0.42)
        rx = rng.uniform(0.27, 0.31)
        dome = cy + insp * (0.72 if side < 0 else 0.8) + 0.18 * ((x - cx) / rx) ** 2
        lung = _ellipse(x, y, cx, cy, rx, insp * 1.05, edge=0.08) * _ramp(y - dome, 0.05)
        np.maximum(lungs, lung, out=lungs)

    heart_w = rng.uniform(0.28, 0.34) * (1.12 if ap else 1.0) * (1.0 + 0.002 * max(age - 50, 0))
    heart_cy = lung_top + insp * 1.68
    heart = np.maximum(_ellipse(x, y, 0.1, heart_cy, heart_w * 1.1, 0.3, edge=0.08),        # left ventricle
                       _ellipse(x, y, -0.08, heart_cy - 0.04, 0.17, 0.22, edge=0.08))  # right atrium
    media = np.maximum(_ellipse(x, y, 0.0, -0.32, 0.12, 0.55, edge=0.12),
                       _ellipse(x, y, 0.1, lung_top + insp * 0.75, 0.08, 0.07, edge=0.2))  # aortic knob
    hm = np.maximum(heart, media)
    lung_vis = lungs * (1.0 - 0.85 * hm)

    # vessel markings: smooth texture, stronger near the hila
    hil = np.exp(-(((np.abs(x) - 0.2) * (1 / 0.35)) ** 2)) * np.exp(-(((y - cy) * (1 / 0.45)) ** 2))  # separable
    markings = _smooth_noise(rng, ah, aw, 14) * (0.02 + 0.05 * hil) + 0.06 * hil
    trachea = _ramp(np.abs(x) - 0.035, 0.03) * _ramp(y + 0.3, 0.1)
    att += lung_vis * (markings - 0.34) + 0.1 * heart + 0.08 * media - 0.12 * trachea

    density = float(np.clip(1.0 - 0.006 * (age - 40), 0.55, 1.1))  # osteopenia with age
    spine = _ramp(np.abs(x) - 0.065, 0.03) * (0.85 + 0.15 * np.cos((y * (1 / 0.12) + rng.random()) * 2 * np.pi))
    thorax = _ellipse(x, y, 0.0, -0.12, 0.74, 0.8, edge=0.08)
    spacing = rng.uniform(0.15, 0.17)
    post = _stripes(y * (1 / spacing) - (0.5 / spacing) * x2 + rng.random(), 4.0)  # posterior ribs droop laterally
    ant = _stripes(y * (1 / (spacing * 1.2)) + (0.55 / (spacing * 1.2)) * np.abs(x) + rng.random(), 5.0)
    ant *= np.abs(x) > 0.15                                                    # anterior ribs slope medially
    post *= 0.11
    post += 0.05 * ant
    bones = 0.2 * spine + post * thorax * (0.35 + 0.65 * lungs)
    clav = np.zeros((ah, aw), np.float32)
    for side in (-1, 1):  # clavicles: thick anti-aliased lines from the manubrium to the acromion
        end = (side * 0.62, -0.80 + rng.normal(0, 0.02))
        _line(clav, to_px(side * 0.08, -0.66), to_px(*end), 0.24, 0.08 * body * aw / 2)
    bones += cv2.GaussianBlur(clav, (3, 3), 0)
    att += density * bones
    _add_blob(att, x, y, -0.9, -0.78, 0.13, 0.22 * density, edge=0.06)  # humeral heads
    _add_blob(att, x, y, 0.9, -0.78, 0.13, 0.22 * density, edge=0.06)

    # gastric bubble under the left hemidiaphragm (image right)
    _add_blob(att, x, y, 0.42, cy + insp * 0.95 + 0.14, 0.08, -0.12, edge=0.4)
    if sex == "F":  # breast shadows over the lower lungs
        bw = rng.uniform(0.2, 0.3)
        for side in (-1, 1):
            _add_blob(att, x, y, side * 0.45, cy + insp * 0.75, bw, 0.08, edge=0.6)

    # benign look-alikes the classifier must learn to ignore
    if rng.random() < 0.5:  # nipple shadows
        for side in (-1, 1):
            _add_blob(att, x, y, side * rng.uniform(0.4, 0.5), cy + insp * 0.55 + rng.normal(0, 0.05), 0.04, 0.10)
    if rng.random() < 0.3:  # calcified granuloma: small, dense, sharp
        _add_blob(att, x, y, rng.uniform(-0.55, 0.55), lung_top + insp * rng.uniform(0.4, 1.4), 0.03, 0.3,
                  edge=0.2, weight=lungs)

    # --- the finding -----------------------------------------------------------------------
    lung_core = (lungs > 0.5) & (hm < 0.5)
    lesion = None
    if label:
        ys_, xs_ = np.nonzero(lung_core)
        if len(ys_) == 0:  # pathological geometry: fall back to the right lung centre
            ys_, xs_ = np.array([ah // 2]), np.array([aw // 4])
        k = rng.integers(len(ys_))
        lesion = _lesion_field(rng, x, y, float(x[0, xs_[k]]), float(y[ys_[k], 0]), kind) * _ramp(0.5 - lungs, 0.3)
        strength = rng.uniform(0.28, 0.4) if kind == "nodule" else rng.uniform(0.23, 0.34)
        att += strength * lesion

    if rng.random() < prof.leads:  # ECG electrodes and a line: bright distractors
        for _ in range(3):
            _add_blob(att, x, y, rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.4), 0.045, 0.35)
        lead = np.zeros((ah, aw), np.float32)
        _line(lead, to_px(rng.uniform(-0.2, 0.2), -1.0), to_px(rng.uniform(-0.3, 0.3), 0.2), 0.3, 1.0)
        att += lead

    # --- acquisition: characteristic curve and gamma at anatomy resolution (smooth), then
    # patient rotation and upsampling of image + masks together in one warp
    exposure = prof.exposure + rng.normal(0, 0.02)
    img = 0.5 + 0.5 * np.tanh((att - exposure) * (prof.contrast * 0.5 * rng.uniform(0.93, 1.07)))
    if prof.gamma != 1.0:
        img = np.clip(img, 0.0, 1.0) ** prof.gamma
    layers = [img, lungs, hm] + ([lesion] if lesion is not None else [])
    stack = np.ascontiguousarray(np.stack(layers, axis=-1), dtype=np.float32)
    theta = rng.normal(0, prof.rotation_sd)
    if abs(theta) > 0.05:  # rotate at anatomy resolution: 4x cheaper than after upsampling
        rot = cv2.getRotationMatrix2D(((aw - 1) / 2, (ah - 1) / 2), theta, 1.0)
        stack = cv2.warpAffine(stack, rot, (aw, ah), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if (ah, aw) != (h, w):
        stack = cv2.resize(stack, (w, h), interpolation=cv2.INTER_LINEAR)
    stack = stack.reshape(h, w, len(layers))
    img = stack[..., 0]
    lung_mask = (stack[..., 1] > 0.5) & (stack[..., 2] < 0.5)
    lesion_mask = np.zeros((h, w), bool)
    if lesion is not None:
        lesion_mask = (stack[..., 3] > 0.35) & lung_mask
        if not lesion_mask.any():  # keep the mask honest: at least the peak pixel
            lesion_mask.flat[int(np.argmax(stack[..., 3]))] = True

    # --- detector: resolution, blur, quantum noise ------------------------------------------
    rh, rw = max(8, int(round(h * prof.resolution))), max(8, int(round(w * prof.resolution)))
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
    sigma = prof.blur * rw
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = gaussian_noise(rng, img.shape)
    img = img + noise * (prof.noise * np.sqrt(np.maximum(1.05 - img, 0.0)))  # worst where few photons
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.ascontiguousarray(img, dtype=np.float32)

    # --- collimation borders (unexposed: white) and burned-in markers ----------------------
    lo, hi = prof.collimation
    m = tuple(int(round(rng.uniform(lo, hi) * n)) for n in (h, h, w, w))  # top, bottom, left, right
    if any(m):
        img[: m[0]] = 0.92
        img[h - m[1]:] = 0.92
        img[:, : m[2]] = 0.92
        img[:, w - m[3]:] = 0.92
    _burn_markers(img, prof, bool(portable), rng, m)
    if prof.invert:
        img = 1.0 - img
    np.clip(img, 0.0, 1.0, out=img)

    mask = lung_mask.astype(np.int64)
    mask[lesion_mask] = 2
    return {
        "image": img[None],
        "label": label,
        "mask": mask,
        "lung_mask": lung_mask.astype(np.uint8),
        "lesion_mask": lesion_mask.astype(np.uint8),
        "domain": domain,
        "index": int(index),
        "sex": sex,
        "age": age,
        "site": domain,
        "portable": portable,
        "finding": kind,
    }


class SynthDataset(SynthDatasetBase):
    """``n`` generated radiographs of one site as a torch Dataset.

    Items follow the `ManifestDataset` layout: ``image`` float32 (1, H, W), ``label`` int64
    scalar, ``mask`` int64 (H, W) (0 background, 1 lung, 2 lesion), ``domain``, ``index`` and
    the attributes ``sex``, ``age``, ``site``, ``portable``.

    Example:
        >>> ds = SynthDataset("city", 600, split="train", size=64)
        >>> ds[0]["image"].shape
        torch.Size([1, 64, 64])
    """

    _sample = staticmethod(sample)
    _domains = DOMAINS
    _attributes = ATTRIBUTES
    _default_size = DEFAULT_SIZE
    _min_size = MIN_SIZE


def _to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(image[0] * 65535.0).astype(np.uint16)


def export(out_dir: str | os.PathLike[str], domains: str | list[str] | tuple[str, ...] = (DEFAULT_SOURCE, DEFAULT_TARGET),
           n_per_domain: int = 100, *, seed: int = 0, size: int = DEFAULT_SIZE,
           splits: tuple[float, float, float] = (0.6, 0.2, 0.2), progress: bool = True) -> Path:
    """Write radiographs (16-bit grey PNG), label-map masks (8-bit PNG: 0/1/2) and ``manifest.csv``.

    Returns the manifest path. Columns: image, label, mask, domain, split, sex, age, site,
    portable; paths relative to ``out_dir``. Every file is written atomically.
    """
    return export_generic(sample, DOMAINS, "radiograph", out_dir, domains, n_per_domain, seed=seed,
                          size=size, min_size=MIN_SIZE, splits=splits, attributes=ATTRIBUTES,
                          image_to_array=_to_uint16, progress=progress)
