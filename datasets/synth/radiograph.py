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

from ._common import SynthDatasetBase, check_domain, check_size, export_generic, make_rng

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
        exposure=0.30, contrast=4.0, gamma=1.6, noise=0.06, blur=0.010, resolution=0.5,
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


@lru_cache(maxsize=16)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x (1, W) and y (H, 1), broadcastable."""
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1)[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1)[:, None]
    return x, y


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, linear over ``width``: a cheap anti-aliased edge."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             edge: float = 0.06, p: float = 2.0) -> np.ndarray:
    """Soft (super-)ellipse occupancy in [0, 1]."""
    if p == 2.0:
        r = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    else:
        r = np.abs((x - cx) / rx) ** p + np.abs((y - cy) / ry) ** p
    return _ramp(r - 1.0, edge * 2)


def _segment(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float],
             half: float) -> np.ndarray:
    """Soft band of half-width ``half`` around the segment a-b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * dx + (y - a[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    d = np.hypot(x - a[0] - t * dx, y - a[1] - t * dy)
    return _ramp(d - half, half * 0.8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field (H, W): a ``cells`` x ``cells`` grid upsampled bicubically."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _lesion_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
                  kind: str) -> np.ndarray:
    """Peak-1 opacity of one finding centred at (cx, cy): a round nodule or a lobulated patch."""
    if kind == "nodule":
        r = rng.uniform(0.075, 0.12)
        d2 = ((x - cx) / r) ** 2 + ((y - cy) / (r * rng.uniform(0.85, 1.15))) ** 2
        return np.clip(1.15 - d2 * 0.9, 0.0, 1.0) ** 0.8  # flat-topped with a soft rim
    field = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    for _ in range(rng.integers(2, 5)):  # consolidation: several overlapping blobs
        bx, by = cx + rng.normal(0, 0.06), cy + rng.normal(0, 0.07)
        r = rng.uniform(0.08, 0.15)
        field = np.maximum(field, np.clip(1.0 - (((x - bx) ** 2 + (y - by) ** 2) / r**2), 0, 1))
    return np.clip(field * 1.3, 0, 1)


def _draw_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, value: float,
               thickness: int) -> None:
    """Burn ``text`` into the float image ``img`` at brightness ``value`` (in place).

    OpenCV >= 5 draws text on 8-bit images only, so the glyphs go to a uint8 stencil first.
    """
    stencil = np.zeros(img.shape, np.uint8)
    cv2.putText(stencil, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    np.maximum(img, stencil.astype(np.float32) * (value / 255.0), out=img)


def _burn_markers(img: np.ndarray, prof: SiteProfile, portable: bool, sex: str, rng: np.random.Generator,
                  margin: tuple[int, int, int, int]) -> None:
    """Burn laterality marker, patient banner text lines and the PORTABLE marker into ``img``.

    Markers are drawn after collimation, in white, the way a console burns them in.
    """
    h, w = img.shape
    top, bottom, left, right = margin
    scale = w / 190.0
    th = max(1, int(round(w / 96)))
    pad = max(2, w // 32)
    glyph = int(round(22 * scale))
    ys = {"t": top + pad + glyph, "b": h - bottom - pad}
    xs = {"l": left + pad, "r": w - right - pad - glyph}
    corner = prof.marker_corner
    # PA: marker "R" over the patient's right (image left) at most sites; AP bedside uses "L".
    _draw_text(img, "L" if prof.ap_fraction >= 1.0 else "R", (xs[corner[1]], ys[corner[0]]),
               scale * 1.1, 1.0, th)
    for k in range(prof.text_lines):  # text-like banner: a site string and a random id-ish one
        txt = prof.name.upper()[:6] if k == 0 else "".join(rng.choice(list("0123456789"), 6))
        _draw_text(img, txt, (left + pad, h - bottom - pad - k * int(glyph * 1.3) - (glyph if corner[0] == "b" and corner[1] == "l" else 0)),
                   scale * 0.7, 0.95, max(1, th - 1))
    if portable:
        tx = w - right - pad - int(glyph * 3.2)
        _draw_text(img, "PORT", (max(tx, left), top + pad + glyph + (glyph + pad if corner == "tr" else 0)),
                   scale * 0.8, 1.0, th)


def sample(domain: str, index: int, *, seed: int = 0, size: int = DEFAULT_SIZE,
           split: str | None = None) -> dict[str, Any]:
    """Generate chest radiograph ``index`` of site ``domain``.

    Deterministic per (domain, seed, split, index).

    Returns a dict:
      ``image`` float32 (1, size, size) in [0, 1]; ``label`` int (1 = finding);
      ``mask`` int64 (size, size) label map 0 = background, 1 = lung, 2 = lesion;
      ``lung_mask`` / ``lesion_mask`` uint8 (size, size) 0/1; ``domain`` str; ``index`` int;
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
    ap = rng.random() < max(prof.ap_fraction, 0.7 if portable else 0.0)
    kind = "none" if not label else ("nodule" if rng.random() < 0.5 else "consolidation")

    # --- geometry: rotate / scale / shift the patient in the field ------------------------
    gx, gy = _grid(h, w)
    theta = np.deg2rad(rng.normal(0, prof.rotation_sd))
    body = rng.uniform(0.93, 1.05) * (0.97 if sex == "F" else 1.0)
    tx, ty = rng.normal(0, 0.03), rng.normal(0.02, 0.03)
    c, s = np.cos(theta), np.sin(theta)
    x = ((gx - tx) * c + (gy - ty) * s) / body
    y = (-(gx - tx) * s + (gy - ty) * c) / body

    # --- anatomy as an attenuation map (air 0, soft tissue ~0.45, bone higher) ----------
    torso = _ellipse(x, y, 0.0, 0.2, 0.9 * rng.uniform(0.95, 1.05), 1.25, edge=0.03, p=3.0)
    neck = _ellipse(x, y, 0.0, -1.05, 0.2, 0.45, edge=0.1)
    arms = _ellipse(x, y, 0.0, -0.72, 1.15, 0.22, edge=0.1)  # shoulders / upper arms
    soft = np.maximum(np.maximum(torso, neck), arms * 0.9)
    att = soft * 0.40

    insp = rng.uniform(0.5, 0.6) * (0.9 if ap else 1.0)   # inspiration: lung height
    lung_top = -0.80
    lungs = np.zeros((h, w), np.float32)
    for side in (-1, 1):
        cx = side * rng.uniform(0.38, 0.42)
        rx = rng.uniform(0.27, 0.31)
        cy = lung_top + insp
        dome = cy + insp * (0.72 if side < 0 else 0.8) + 0.18 * ((x - cx) / rx) ** 2
        lung = _ellipse(x, y, cx, cy, rx, insp * 1.05, edge=0.08, p=2.3) * _ramp(y - dome, 0.05)
        lungs = np.maximum(lungs, lung)

    heart_w = rng.uniform(0.26, 0.31) * (1.12 if ap else 1.0) * (1.0 + 0.002 * max(age - 50, 0))
    heart_cy = lung_top + insp * 1.55
    heart = _ellipse(x, y, 0.1, heart_cy, heart_w * 1.15, 0.3, edge=0.08)
    media = _ellipse(x, y, 0.0, -0.3, 0.13, 0.55, edge=0.12)
    trachea = _ramp(np.abs(x) - 0.035, 0.03) * _ramp(y + 0.3, 0.1)
    lung_vis = lungs * (1.0 - 0.8 * np.maximum(heart, media))

    # vessel markings: smooth texture, stronger near the hila
    hil = np.exp(-(((np.abs(x) - 0.2) / 0.35) ** 2 + ((y - (lung_top + insp)) / 0.45) ** 2))
    markings = _smooth_noise(rng, h, w, 14) * (0.02 + 0.05 * hil) + 0.06 * hil

    att = att - 0.34 * lung_vis + lung_vis * markings + 0.32 * heart + 0.22 * media - 0.12 * trachea

    density = float(np.clip(1.0 - 0.006 * (age - 40), 0.55, 1.1))  # osteopenia with age
    spine = _ramp(np.abs(x) - 0.065, 0.03) * (0.85 + 0.15 * np.cos((y / 0.12 + rng.random()) * 2 * np.pi))
    thorax = _ellipse(x, y, 0.0, -0.12, 0.74, 0.8, edge=0.08)
    spacing = rng.uniform(0.15, 0.17)
    ph_post = (y - 0.5 * x**2 + rng.random() * spacing) / spacing
    post = np.clip(1.0 - np.abs(ph_post - np.floor(ph_post) - 0.5) * 4.0, 0, 1)
    ph_ant = (y + 0.55 * np.abs(x) + rng.random() * spacing) / (spacing * 1.2)
    ant = np.clip(1.0 - np.abs(ph_ant - np.floor(ph_ant) - 0.5) * 5.0, 0, 1) * (np.abs(x) > 0.15)
    ribs = (0.11 * post + 0.05 * ant) * thorax * (0.35 + 0.65 * lungs)
    clav = np.maximum(
        _segment(x, y, (-0.08, -0.66), (-0.62, -0.80 + rng.normal(0, 0.02)), 0.04),
        _segment(x, y, (0.08, -0.66), (0.62, -0.80 + rng.normal(0, 0.02)), 0.04),
    )
    humeri = np.maximum(_ellipse(x, y, -0.9, -0.78, 0.12, 0.14), _ellipse(x, y, 0.9, -0.78, 0.12, 0.14))
    att = att + density * (0.26 * spine + ribs + 0.24 * clav + 0.22 * humeri)

    # gastric bubble under the left hemidiaphragm (image right)
    bubble_y = lung_top + insp * 1.95 + 0.12
    att = att - 0.12 * _ellipse(x, y, 0.42, bubble_y, 0.1, 0.06, edge=0.2) * torso
    if sex == "F":  # breast shadows over the lower lungs
        bw = rng.uniform(0.2, 0.3)
        for side in (-1, 1):
            att = att + 0.08 * _ellipse(x, y, side * 0.45, lung_top + insp * 1.75, bw, bw * 0.8, edge=0.3)

    # benign look-alikes the classifier must learn to ignore
    if rng.random() < 0.5:  # nipple shadows
        for side in (-1, 1):
            att = att + 0.10 * _ellipse(x, y, side * rng.uniform(0.4, 0.5),
                                        lung_top + insp * 1.55 + rng.normal(0, 0.05), 0.035, 0.035, edge=0.3)
    if rng.random() < 0.3:  # calcified granuloma: small, dense, sharp
        gyx = rng.uniform(-0.55, 0.55), lung_top + insp * rng.uniform(0.4, 1.4)
        att = att + 0.3 * _ellipse(x, y, gyx[0], gyx[1], 0.025, 0.025, edge=0.2) * lungs

    # --- the finding -----------------------------------------------------------------------
    lung_mask = (lungs > 0.5) & (np.maximum(heart, media) < 0.5)
    lesion_mask = np.zeros((h, w), bool)
    if label:
        ys_, xs_ = np.nonzero(lung_mask)
        if len(ys_) == 0:  # pathological geometry: fall back to the lung centre
            ys_, xs_ = np.array([h // 2]), np.array([w // 4])
        k = rng.integers(len(ys_))
        cx = float(gx[0, xs_[k]])
        cy = float(gy[ys_[k], 0])
        field = _lesion_field(rng, gx, gy, cx, cy, kind) * _ramp(0.5 - lungs, 0.3)
        strength = rng.uniform(0.17, 0.26) if kind == "nodule" else rng.uniform(0.13, 0.20)
        att = att + strength * field
        lesion_mask = (field > 0.35) & lung_mask
        if not lesion_mask.any():  # keep the mask honest: at least the centre pixel
            lesion_mask[ys_[k], xs_[k]] = True

    leads = rng.random() < prof.leads
    if leads:  # ECG electrodes and a line: bright distractors outside the lesion model
        for _ in range(3):
            att = att + 0.35 * _ellipse(x, y, rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.4), 0.04, 0.04, edge=0.3)
        att = att + 0.3 * _segment(x, y, (rng.uniform(-0.2, 0.2), -1.0), (rng.uniform(-0.3, 0.3), 0.2), 0.012)

    # --- acquisition: characteristic curve, gamma, blur, noise, resolution -------------------
    exposure = prof.exposure + rng.normal(0, 0.02)
    img = 0.5 + 0.5 * np.tanh((att - exposure) * prof.contrast * 0.5 * rng.uniform(0.93, 1.07))
    img = np.clip(img, 0.0, 1.0) ** prof.gamma
    rh, rw = max(8, int(round(h * prof.resolution))), max(8, int(round(w * prof.resolution)))
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
    sigma = prof.blur * rw
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img + prof.noise * noise * np.sqrt(1.05 - img)  # quantum noise: worst where few photons
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)

    # --- collimation borders (unexposed: white) and burned-in markers ----------------------
    lo, hi = prof.collimation
    m = [int(round(rng.uniform(lo, hi) * n)) for n in (h, h, w, w)]  # top, bottom, left, right
    if any(m):
        img[: m[0]] = 0.92
        img[h - m[1]:] = 0.92
        img[:, : m[2]] = 0.92
        img[:, w - m[3]:] = 0.92
    img = np.ascontiguousarray(img, dtype=np.float32)
    _burn_markers(img, prof, bool(portable), sex, rng, tuple(m))
    if prof.invert:
        img = 1.0 - img
    img = np.clip(img, 0.0, 1.0)

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
