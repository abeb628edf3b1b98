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
    make_rng,
)
from ._radiograph_draw import (
    _ANATOMY_RES,
    _ANT_RIBS,
    _PHASE_OFFSET,
    _POST_RIBS,
    _add_blob,
    _burn_markers,
    _Draws,
    _Ellipses,
    _Grid,
    _lesion_field,
    _line,
    _max_into,
    _ramp,
    _resize,
    _rotate,
    _smooth_noise,
    _stripes,
    _union,
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
