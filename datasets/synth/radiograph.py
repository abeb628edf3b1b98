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

import math
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


Box = tuple[slice, slice]  # (rows, columns) of the anatomy canvas


class _Grid:
    """Anatomy coordinates of the drawing canvas, and the pixel boxes that shapes cover.

    ``x`` (1, W) and ``y`` (H, 1) are float32 anatomy coordinates: image coordinates in [-1, 1]
    shifted by (tx, ty) and divided by the body scale. Shapes are evaluated only inside their
    `box`, because at 64 px most of the time goes in touching pixels a shape never reaches.
    """

    __slots__ = ("h", "w", "body", "tx", "ty", "x", "y")

    def __init__(self, h: int, w: int, body: float, tx: float, ty: float) -> None:
        gx, gy = _axes(h, w)
        self.h, self.w, self.body, self.tx, self.ty = h, w, body, tx, ty
        self.x = (gx - tx) * (1.0 / body)
        self.y = (gy - ty) * (1.0 / body)

    def _span(self, lo: float, hi: float, shift: float, n: int) -> slice:
        # pixel centre j sits at anatomy coordinate ((j + 0.5) * 2 / n - 1 - shift) / body
        a = (lo * self.body + shift + 1.0) * n * 0.5 - 0.5
        b = (hi * self.body + shift + 1.0) * n * 0.5 - 0.5
        return slice(min(max(math.floor(a), 0), n), min(max(math.ceil(b) + 1, 0), n))

    def box(self, x0: float, x1: float, y0: float, y1: float) -> Box:
        """Rows and columns of every pixel centre inside [x0, x1] x [y0, y1] (plus a pixel of margin)."""
        return self._span(y0, y1, self.ty, self.h), self._span(x0, x1, self.tx, self.w)

    def px(self, xn: float, yn: float) -> tuple[float, float]:
        """Anatomy coordinates -> (column, row) pixel coordinates of the canvas."""
        return (xn * self.body + self.tx + 1) / 2 * self.w - 0.5, (yn * self.body + self.ty + 1) / 2 * self.h - 0.5


def _union(a: Box, b: Box) -> Box:
    """The smallest box holding boxes ``a`` and ``b``."""
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, linear over ``width``: a cheap anti-aliased edge."""
    out = d * (-1.0 / width)
    out += 0.5
    return out.clip(0.0, 1.0, out=out)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             edge: float = 0.06, peak: float = 1.0) -> np.ndarray:
    """``peak`` times a soft ellipse occupancy in [0, 1]; x (1, W) and y (H, 1) keep it separable.

    Occupancy is ``ramp(d2 - 1, 2 * edge)`` with d2 the normalised squared radius; the ramp and
    ``peak`` are folded into the 1-D terms so only two full-size operations remain.
    """
    k = -peak / (2 * edge)
    a = x - cx
    np.square(a, out=a)
    a *= k / (rx * rx)
    b = y - cy
    np.square(b, out=b)
    b *= k / (ry * ry)
    b += peak * 0.5 - k
    out = np.add(a, b)
    return out.clip(min(peak, 0.0), max(peak, 0.0), out=out)


def _ellipse_box(g: _Grid, cx: float, cy: float, rx: float, ry: float, edge: float = 0.06,
                 peak: float = 1.0) -> tuple[Box, np.ndarray]:
    """`_ellipse` evaluated only over its support (d2 < 1 + edge): the box and the values in it."""
    s = math.sqrt(1.0 + edge)
    bx = g.box(cx - rx * s, cx + rx * s, cy - ry * s, cy + ry * s)
    return bx, _ellipse(g.x[:, bx[1]], g.y[bx[0]], cx, cy, rx, ry, edge, peak)


def _max_into(canvas: np.ndarray, bx: Box, values: np.ndarray) -> None:
    """``canvas[bx] = max(canvas[bx], values)`` in place."""
    region = canvas[bx]
    np.maximum(region, values, out=region)


def _add_blob(att: np.ndarray, g: _Grid, cx: float, cy: float, r: float, amount: float, edge: float = 0.3,
              weight: np.ndarray | None = None) -> None:
    """Add a small soft disc of height ``amount`` to ``att`` in place, touching only its box."""
    bx, blob = _ellipse_box(g, cx, cy, r, r, edge, amount)
    if weight is not None:
        blob *= weight[bx]
    att[bx] += blob


class _Ellipses:
    """Soft ellipses (`_ellipse`) queued while the random parameters are drawn, then evaluated together.

    At 64 px most of the time went in the ~7 numpy calls on the 1-D profiles of each shape; the
    profiles of all queued shapes are computed in one (N, W) and one (N, H) pass instead, which
    leaves one add and one clip per shape, over its box only.
    """

    def __init__(self, g: _Grid) -> None:
        self.g = g
        self.params: list[tuple[float, float, float, float, float, float]] = []
        self.cols = self.rows = np.zeros((0, 0), np.float32)

    def add(self, cx: float, cy: float, rx: float, ry: float, edge: float = 0.06, peak: float = 1.0) -> int:
        """Queue an ellipse; returns its handle for `get`."""
        self.params.append((cx, cy, rx, ry, edge, peak))
        return len(self.params) - 1

    def evaluate(self) -> None:
        """Compute the x (N, W) and y (N, H) profiles of every queued ellipse."""
        cx, cy, rx, ry, edge, peak = np.array(self.params, np.float32).T[:, :, None]
        k = -peak / (2 * edge)
        self.cols = np.square(self.g.x - cx) * (k / (rx * rx))
        self.rows = np.square(self.g.y[:, 0] - cy) * (k / (ry * ry)) + (0.5 * peak - k)

    def box(self, i: int) -> Box:
        """The box of ellipse ``i``: its support d2 < 1 + edge."""
        cx, cy, rx, ry, edge, _ = self.params[i]
        s = math.sqrt(1.0 + edge)
        return self.g.box(cx - rx * s, cx + rx * s, cy - ry * s, cy + ry * s)

    def get(self, i: int) -> tuple[Box, np.ndarray]:
        """Box of ellipse ``i`` and its values there (a fresh array)."""
        bx = self.box(i)
        peak = self.params[i][5]
        out = np.add(self.cols[i, bx[1]], self.rows[i, bx[0], None])
        return bx, out.clip(min(peak, 0.0), max(peak, 0.0), out=out)

    def max_into(self, canvas: np.ndarray, i: int) -> None:
        """``canvas = max(canvas, ellipse i)`` over the ellipse's box."""
        _max_into(canvas, *self.get(i))


class _Draws:
    """Scalar random draws for one image, served from blocks drawn up front.

    Each call into ``numpy.random.Generator`` for one scalar costs a few microseconds; with ~40
    draws per image that was a tenth of the generation time. Blocks of uniforms and standard
    normals are drawn once (and topped up if ever exhausted, still deterministically) and
    handed out in order, with the ``Generator`` method names used here. ``gen`` is the
    underlying generator for array draws.
    """

    __slots__ = ("gen", "_u", "_z")

    def __init__(self, gen: np.random.Generator, n_uniform: int = 64, n_normal: int = 24) -> None:
        self.gen = gen
        # reversed so pop() hands them out in draw order
        self._u: list[float] = gen.random(n_uniform).tolist()[::-1]
        self._z: list[float] = gen.standard_normal(n_normal).tolist()[::-1]

    def random(self) -> float:
        """Uniform in [0, 1)."""
        if not self._u:
            self._u = self.gen.random(32).tolist()[::-1]
        return self._u.pop()

    def uniform(self, low: float, high: float) -> float:
        """Uniform in [low, high)."""
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """Integer in [low, high), or in [0, low) when ``high`` is None."""
        if high is None:
            low, high = 0, low
        return min(low + int(self.random() * (high - low)), high - 1)

    def normal(self, loc: float = 0.0, scale: float = 1.0) -> float:
        """Normal with mean ``loc`` and standard deviation ``scale``."""
        if not self._z:
            self._z = self.gen.standard_normal(16).tolist()[::-1]
        return loc + scale * self._z.pop()


def _stripe_table(sharp: float) -> np.ndarray:
    """Triangular bands of `_stripes` sampled at 256 phases of one period: a (1, 256) float32 LUT."""
    phase = (np.arange(256, dtype=np.float64) + 0.5) / 256
    return np.clip(1.0 - sharp * np.abs(phase - 0.5), 0.0, 1.0).astype(np.float32)[None, :]


# Rib profiles: posterior ribs are bands 1/4 of a period wide, anterior ones 1/5.
_POST_RIBS = _stripe_table(4.0)
_ANT_RIBS = _stripe_table(5.0)
_PHASE_OFFSET = 64.0  # whole periods added so phases are positive and truncation is a floor


def _stripes(y_term: np.ndarray, x_term: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Periodic bands of phase ``y_term + x_term`` ((H, 1) + (1, W)) through a 256-entry ``table``.

    The phase is quantised to 1/256 of a period: the integer part wraps for free in the uint8
    cast, and ``cv2.LUT`` evaluates the profile in one pass instead of six numpy passes.
    """
    phase = np.add(y_term * 256.0, x_term * 256.0)
    idx = phase.astype(np.int32).astype(np.uint8)  # int -> uint8 wraps modulo 256: the fractional phase
    return cv2.LUT(idx, table)


def _line(canvas: np.ndarray, a: tuple[float, float], b: tuple[float, float], value: float,
          thickness: float) -> None:
    """Draw an anti-aliased line of ``value`` between pixel points a and b (sub-pixel precise)."""
    s = 16  # 4 fractional bits
    cv2.line(canvas, (int(a[0] * s), int(a[1] * s)), (int(b[0] * s), int(b[1] * s)), float(value),
             max(1, int(round(thickness))), cv2.LINE_AA, 4)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field (H, W): a ``cells`` x ``cells`` grid upsampled bicubically."""
    small = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _lesion_field(rng: _Draws, g: _Grid, cx: float, cy: float, kind: str) -> tuple[Box, np.ndarray]:
    """Peak-1 opacity of one finding centred at (cx, cy): a round nodule or a lobulated patch.

    Returns the box the finding covers and its values there.
    """
    if kind == "nodule":
        r = rng.uniform(0.09, 0.14)
        ry = r * rng.uniform(0.85, 1.15)
        # clip(1.15 - 0.9 d2) ** 0.8: flat-topped with a soft rim, zero beyond d2 = 1.15 / 0.9
        s = math.sqrt(1.15 / 0.9)
        bx = g.box(cx - r * s, cx + r * s, cy - ry * s, cy + ry * s)
        d = np.add(np.square(g.x[:, bx[1]] - cx) * (-0.9 / (r * r)), np.square(g.y[bx[0]] - cy) * (-0.9 / (ry * ry)) + 1.15)
        d.clip(0.0, 1.0, out=d)
        return bx, cv2.pow(d, 0.8)
    blobs = [(cx + rng.normal(0, 0.06), cy + rng.normal(0, 0.07), rng.uniform(0.08, 0.15))
             for _ in range(rng.integers(2, 5))]  # consolidation: several overlapping blobs
    bx = g.box(min(b[0] - b[2] for b in blobs), max(b[0] + b[2] for b in blobs),
               min(b[1] - b[2] for b in blobs), max(b[1] + b[2] for b in blobs))
    xs, ys = g.x[:, bx[1]], g.y[bx[0]]
    field = np.zeros((ys.shape[0], xs.shape[1]), np.float32)
    for bx_, by_, r in blobs:
        # 1.3 * clip(1 - d2): the 1.3 gain is folded in, the final clip caps the overlap at 1
        np.maximum(field, np.add(np.square(xs - bx_) * (-1.3 / r**2), np.square(ys - by_) * (-1.3 / r**2) + 1.3),
                   out=field)
    return bx, field.clip(0.0, 1.0, out=field)


def _rotate(layers: list[np.ndarray], theta: float) -> list[np.ndarray]:
    """Rotate same-size (H, W) ``layers`` together by ``theta`` degrees about the centre (edges replicated).

    One multi-channel ``warpAffine`` at anatomy resolution: warping after upsampling would cost
    4x the pixels, and ``warpAffine`` is several times slower per pixel than ``resize``.
    Rotations of 0.05 degrees or less are skipped.
    """
    if abs(theta) <= 0.05:
        return layers
    h, w = layers[0].shape
    rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), theta, 1.0)
    stack = cv2.warpAffine(cv2.merge(layers), rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return list(cv2.split(stack))


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of (H', W') ``img`` to (h, w); ``img`` itself when the size already matches."""
    if img.shape == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _burn_markers(img: np.ndarray, prof: SiteProfile, portable: bool, rng: _Draws,
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
        t = prof.name.upper()[:6] if k == 0 else "".join(str(rng.integers(10)) for _ in range(6))
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
    rng = _Draws(make_rng(domain, seed, split, index))

    # --- patient -----------------------------------------------------------------------
    label = int(rng.random() < prof.prevalence)
    sex = "F" if rng.random() < prof.female else "M"
    age = min(max(round(rng.normal(prof.age_mean + 4 * label, prof.age_sd)), 18), 95)
    portable = int(rng.random() < (prof.portable_if_finding if label else prof.portable_if_normal))
    ap = bool(rng.random() < max(prof.ap_fraction, 0.7 if portable else 0.0))
    kind = "none" if not label else ("nodule" if rng.random() < 0.5 else "consolidation")

    # --- anatomy, drawn at <= 64 px as an attenuation map (air 0, soft tissue ~0.4, bone more).
    # At this size the cost is numpy calls, not pixels: the random shape parameters are drawn
    # first (in a fixed order, so the stream is stable), all soft ellipses are then evaluated
    # in one batch (`_Ellipses`), and every shape touches only its own box of the canvas.
    f = min(1.0, _ANATOMY_RES / max(h, w))
    ah, aw = max(int(round(h * f)), 8), max(int(round(w * f)), 8)
    body = rng.uniform(0.93, 1.05) * (0.97 if sex == "F" else 1.0)
    tx, ty = rng.normal(0, 0.03), rng.normal(0.02, 0.03)
    g = _Grid(ah, aw, body, tx, ty)
    x, y = g.x, g.y
    shapes = _Ellipses(g)

    torso_w = 0.9 * rng.uniform(0.95, 1.05)
    neck = shapes.add(0.0, -1.05, 0.2, 0.45, edge=0.1, peak=0.4)  # soft tissue attenuates 0.4
    shoulders = shapes.add(0.0, -0.72, 1.15, 0.22, edge=0.1, peak=0.9 * 0.4)
    insp = rng.uniform(0.5, 0.6) * (0.9 if ap else 1.0)  # inspiration: lung height
    lung_top = -0.80
    cy = lung_top + insp
    lung_shapes = []
    for side in (-1, 1):
        cx = side * rng.uniform(0.38, 0.42)
        rx = rng.uniform(0.27, 0.31)
        dome_y = cy + insp * (0.72 if side < 0 else 0.8)  # diaphragm: the right dome sits higher
        lung_shapes.append((shapes.add(cx, cy, rx, insp * 1.05, edge=0.08), cx, rx, dome_y))
    heart_w = rng.uniform(0.28, 0.34) * (1.12 if ap else 1.0) * (1.0 + 0.002 * max(age - 50, 0))
    heart_cy = lung_top + insp * 1.68
    heart = (shapes.add(0.1, heart_cy, heart_w * 1.1, 0.3, edge=0.08),          # left ventricle
             shapes.add(-0.08, heart_cy - 0.04, 0.17, 0.22, edge=0.08))         # right atrium
    media = (shapes.add(0.0, -0.32, 0.12, 0.55, edge=0.12),
             shapes.add(0.1, lung_top + insp * 0.75, 0.08, 0.07, edge=0.2))    # aortic knob
    smooth = _smooth_noise(rng.gen, ah, aw, 14)  # vessel-marking texture
    density = min(max(1.0 - 0.006 * (age - 40), 0.55), 1.1)  # osteopenia with age
    spine_phase = rng.random()
    thorax = shapes.add(0.0, -0.12, 0.74, 0.8, edge=0.08)
    spacing = rng.uniform(0.15, 0.17)
    post_phase, ant_phase = rng.random(), rng.random()
    clav_ends = [(side, -0.80 + rng.normal(0, 0.02)) for side in (-1, 1)]
    blobs = [  # (shape, weighted by the lungs)
        (shapes.add(-0.9, -0.78, 0.13, 0.13, edge=0.06, peak=0.22 * density), False),  # humeral heads
        (shapes.add(0.9, -0.78, 0.13, 0.13, edge=0.06, peak=0.22 * density), False),
        # gastric bubble under the left hemidiaphragm (image right)
        (shapes.add(0.42, cy + insp * 0.95 + 0.14, 0.08, 0.08, edge=0.4, peak=-0.12), False),
    ]
    if sex == "F":  # breast shadows over the lower lungs
        bw = rng.uniform(0.2, 0.3)
        for side in (-1, 1):
            blobs.append((shapes.add(side * 0.45, cy + insp * 0.75, bw, bw, edge=0.6, peak=0.08), False))
    # benign look-alikes the classifier must learn to ignore
    if rng.random() < 0.5:  # nipple shadows
        for side in (-1, 1):
            bx_, by_ = side * rng.uniform(0.4, 0.5), cy + insp * 0.55 + rng.normal(0, 0.05)
            blobs.append((shapes.add(bx_, by_, 0.04, 0.04, edge=0.3, peak=0.10), False))
    if rng.random() < 0.3:  # calcified granuloma: small, dense, sharp, only over lung
        bx_, by_ = rng.uniform(-0.55, 0.55), lung_top + insp * rng.uniform(0.4, 1.4)
        blobs.append((shapes.add(bx_, by_, 0.03, 0.03, edge=0.2, peak=0.3), True))
    shapes.evaluate()

    # torso: a boxy super-ellipse (|x|^4 + |y|^4), 0.4 * ramp(xq + yq - 1, 0.08), with neck and shoulders
    xq = np.square(x * x * (1.0 / (torso_w * torso_w)))
    yq = np.square(np.square((y - 0.2) * (1.0 / 1.25)))
    att = np.add(xq * (-0.4 / 0.08), yq * (-0.4 / 0.08) + 0.4 * (0.5 + 1.0 / 0.08))
    att.clip(0.0, 0.4, out=att)
    shapes.max_into(att, neck)
    shapes.max_into(att, shoulders)

    lungs = np.zeros((ah, aw), np.float32)
    for i, cx, rx, dome_y in lung_shapes:
        bx, lung = shapes.get(i)
        # cut below the diaphragm dome: ramp(y - dome, 0.05) with the ramp folded into the 1-D terms
        dome = np.square((x[:, bx[1]] - cx) * (1.0 / rx))
        dome *= 0.18 / 0.05
        dome += dome_y / 0.05 + 0.5
        cut = np.subtract(dome, y[bx[0]] * (1.0 / 0.05))
        lung *= cut.clip(0.0, 1.0, out=cut)
        _max_into(lungs, bx, lung)
    lb = _union(shapes.box(lung_shapes[0][0]), shapes.box(lung_shapes[1][0]))

    hm = np.zeros((ah, aw), np.float32)  # heart, then heart and mediastinum
    for i in heart:
        shapes.max_into(hm, i)
    hb = _union(shapes.box(heart[0]), shapes.box(heart[1]))
    att[hb] += hm[hb] * 0.1
    med = np.zeros((ah, aw), np.float32)
    for i in media:
        shapes.max_into(med, i)
    mb = _union(shapes.box(media[0]), shapes.box(media[1]))
    att[mb] += med[mb] * 0.08
    _max_into(hm, mb, med[mb])

    # lungs: air (-0.34) with vessel markings, stronger near the hila; the heart hides them
    lung_vis = hm[lb] * -0.85
    lung_vis += 1.0
    lung_vis *= lungs[lb]
    xl, yl = x[:, lb[1]], y[lb[0]]
    hil = np.exp(-np.square((np.abs(xl) - 0.2) * (1 / 0.35))) * np.exp(-np.square((yl - cy) * (1 / 0.45)))
    markings = hil * 0.05
    markings += 0.02
    markings *= smooth[lb]
    hil *= 0.06
    markings += hil
    markings -= 0.34
    markings *= lung_vis
    att[lb] += markings

    sb = g.box(-0.08, 0.08, -10.0, 10.0)  # spine: a bright column with faint vertebral banding
    spine_y = np.cos((y[sb[0]] * (1 / 0.12) + spine_phase) * (2 * np.pi))
    spine_y *= 0.15 * 0.2 * density
    spine_y += 0.85 * 0.2 * density
    att[sb] += _ramp(np.abs(x[:, sb[1]]) - 0.065, 0.03) * spine_y
    thb, ribs_in = shapes.get(thorax)
    xt, yt = x[:, thb[1]], y[thb[0]]
    # posterior ribs droop laterally; anterior ribs slope medially and stop short of the sternum
    ribs = _stripes(yt * (1 / spacing) + (post_phase + _PHASE_OFFSET), np.square(xt) * (-0.5 / spacing),
                    _POST_RIBS * (0.11 * density))
    sa = spacing * 1.2
    ant = _stripes(yt * (1 / sa) + (ant_phase + _PHASE_OFFSET), np.abs(xt) * (0.55 / sa), _ANT_RIBS * (0.05 * density))
    ant *= np.abs(xt) > 0.15
    ribs += ant
    ribs *= ribs_in
    under = lungs[thb] * 0.65  # ribs show more over the lungs than through the mediastinum
    under += 0.35
    ribs *= under
    att[thb] += ribs
    # thin structures as anti-aliased lines on one canvas, softened together: the trachea (a dark
    # band down to the carina) and the clavicles (from the manubrium to the acromion)
    lines = np.zeros((ah, aw), np.float32)
    _line(lines, g.px(0.0, -1.2), g.px(0.0, -0.3), -0.12, 0.07 * body * aw / 2)
    for side, end_y in clav_ends:
        _line(lines, g.px(side * 0.08, -0.66), g.px(side * 0.62, end_y), 0.24 * density, 0.08 * body * aw / 2)
    att += cv2.GaussianBlur(lines, (3, 3), 0)
    for i, weighted in blobs:
        bx, blob = shapes.get(i)
        if weighted:
            blob *= lungs[bx]
        att[bx] += blob

    # --- the finding -----------------------------------------------------------------------
    lesion = None
    if label:
        core = np.flatnonzero((lungs > 0.5) & (hm < 0.5))  # row-major, like np.nonzero
        if len(core) == 0:  # pathological geometry: fall back to the right lung centre
            core = np.array([(ah // 2) * aw + aw // 4])
        k = int(core[rng.integers(len(core))])
        fb, field = _lesion_field(rng, g, float(x[0, k % aw]), float(y[k // aw, 0]), kind)
        inside = lungs[fb] * (1 / 0.3)  # ramp(0.5 - lungs, 0.3): only where the lung is solid
        inside -= 0.5 / 0.3 - 0.5
        field *= inside.clip(0.0, 1.0, out=inside)
        lesion = np.zeros((ah, aw), np.float32)
        lesion[fb] = field
        strength = rng.uniform(0.28, 0.4) if kind == "nodule" else rng.uniform(0.23, 0.34)
        att[fb] += field * strength

    if rng.random() < prof.leads:  # ECG electrodes and a line: bright distractors
        for _ in range(3):
            _add_blob(att, g, rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.4), 0.045, 0.35)
        lead = np.zeros((ah, aw), np.float32)
        _line(lead, g.px(rng.uniform(-0.2, 0.2), -1.0), g.px(rng.uniform(-0.3, 0.3), 0.2), 0.3, 1.0)
        att += lead

    # --- acquisition: characteristic curve and gamma at anatomy resolution (smooth). The curve
    # 0.5 + 0.5 tanh(c (att - e)) is the logistic 1 / (1 + exp(-2c (att - e))), so with gamma it
    # is exp(-gamma log(1 + exp(-2c (att - e)))): cv2.exp/log are several times faster than
    # numpy's tanh and power, and exp(-2c (att - e)) stays far from overflow (|att| < 2, c < 4).
    exposure = prof.exposure + rng.normal(0, 0.02)
    c2 = 2.0 * prof.contrast * 0.5 * rng.uniform(0.93, 1.07)
    img = att
    img *= -c2
    img += c2 * exposure
    cv2.exp(img, img)
    img += 1.0
    if prof.gamma != 1.0:
        cv2.log(img, img)
        img *= -prof.gamma
        cv2.exp(img, img)
    else:
        np.reciprocal(img, out=img)

    # patient rotation at anatomy resolution, image and masks together; then the image goes
    # straight to the detector's sampling grid and the lung / lesion maps to the output grid
    lung_core = np.subtract(1.0, hm)  # lung pixels not hidden by heart or mediastinum
    np.minimum(lung_core, lungs, out=lung_core)
    theta = rng.normal(0, prof.rotation_sd)
    layers = _rotate([img, lung_core] + ([lesion] if lesion is not None else []), theta)
    rh, rw = max(8, int(round(h * prof.resolution))), max(8, int(round(w * prof.resolution)))
    img = _resize(layers[0], rh, rw)
    lung_mask = _resize(layers[1], h, w) > 0.5
    lesion_mask = np.zeros((h, w), bool)
    if lesion is not None:
        lesion_map = _resize(layers[2], h, w)
        lesion_mask = (lesion_map > 0.35) & lung_mask
        if not lesion_mask.any():  # keep the mask honest: at least the strongest pixel inside the lung
            lesion_map = lesion_map * lung_mask
            lesion_mask.flat[int(np.argmax(lesion_map))] = True
            lesion_mask &= lung_mask

    # --- detector: resolution (above), blur, quantum noise ------------------------------------
    sigma = prof.blur * rw
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = gaussian_noise(rng.gen, img.shape)
    amp = np.subtract(1.05, img)  # img <= 1 here: photon-starved (bright) pixels are noisiest
    np.sqrt(amp, out=amp)
    amp *= noise
    amp *= prof.noise
    img += amp
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)

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
        np.subtract(1.0, img, out=img)
    img.clip(0.0, 1.0, out=img)

    lung_u8 = lung_mask.view(np.uint8)
    lesion_u8 = lesion_mask.view(np.uint8)
    mask = (lung_u8 + lesion_u8).astype(np.int64)  # lesion lies inside the lung: 1 + 1 = 2
    return {
        "image": img[None],
        "label": label,
        "mask": mask,
        "lung_mask": lung_u8,
        "lesion_mask": lesion_u8,
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
