"""Procedural dashcam road scenes with per-pixel classes.

A forward-facing camera sees a road in one-point perspective: the road narrows to a vanishing
point on the horizon, lane markings are dashed in perspective, objects shrink with distance.

Classes (``mask`` values): 0 road, 1 lane_marking, 2 sidewalk, 3 building, 4 vegetation,
5 terrain, 6 sky, 7 vehicle, 8 person.

Scenes:
- ``urban``: an urban canyon of buildings (with windows) behind sidewalks, street trees, many
  cars and pedestrians, wide road with centre and edge lines.
- ``rural``: a narrower road through fields (terrain) with tree lines, single trees and bushes
  (vegetation), few cars, rare people.

Conditions: ``day``, ``dusk``, ``night`` (headlights, tail lights, street lamps), ``fog``
(depth-dependent haze), ``rain`` (streaks, wet road, low contrast). Each scene also has its own
dashcam: colour cast, vignetting, sensor noise and JPEG quality differ, as they do between fleets.

Domains are ``<scene>_<condition>``; the default pair is ``urban_day`` -> ``rural_day``: the
label set is shared (rural scenes still have roads, markings, cars, sky; urban scenes have
street trees and verges), but layout, class frequencies, textures and the camera differ. The
shift is real (a source-only segmenter loses mIoU on rural) and reducible (colour/JPEG
augmentation and feature alignment help), as ``tests/datasets/test_shift.py`` measures.
"""

from __future__ import annotations

import math
import os
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
    make_rng,
    to_uint8_rgb,
)

__all__ = [
    "CLASSES", "SCENES", "CONDITIONS", "DOMAINS", "DEFAULT_SOURCE", "DEFAULT_TARGET", "ATTRIBUTES",
    "sample", "SynthDataset", "export",
]

CLASSES: tuple[str, ...] = ("road", "lane_marking", "sidewalk", "building", "vegetation", "terrain",
                            "sky", "vehicle", "person")
ROAD, LANE, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY, VEHICLE, PERSON = range(9)
SCENES: tuple[str, ...] = ("urban", "rural")
CONDITIONS: tuple[str, ...] = ("day", "dusk", "night", "fog", "rain")
DOMAINS: tuple[str, ...] = tuple(f"{s}_{c}" for s in SCENES for c in CONDITIONS)
DEFAULT_SOURCE = "urban_day"
DEFAULT_TARGET = "rural_day"
ATTRIBUTES: tuple[str, ...] = ("scene", "timeofday", "weather")
DEFAULT_SIZE = (128, 256)
MIN_SIZE = 16
# BDD100K vocabulary, so synthetic and real manifests group the same way
_TIMEOFDAY = {"day": "daytime", "dusk": "dawn/dusk", "night": "night", "fog": "daytime", "rain": "daytime"}
_WEATHER = {"day": "clear", "dusk": "clear", "night": "clear", "fog": "foggy", "rain": "rainy"}

# Base colours (RGB, [0, 1]) per class and scene; jittered per image.
_PALETTE = {
    "urban": np.array([
        [0.36, 0.36, 0.38],  # road: grey asphalt
        [0.92, 0.92, 0.88],  # lane marking
        [0.62, 0.60, 0.58],  # sidewalk
        [0.55, 0.45, 0.40],  # building
        [0.22, 0.42, 0.18],  # vegetation
        [0.40, 0.50, 0.25],  # terrain (verges)
        [0.55, 0.72, 0.92],  # sky
        [0.50, 0.10, 0.10],  # vehicle (re-coloured per car)
        [0.20, 0.20, 0.45],  # person (re-coloured per person)
    ], np.float32),
    "rural": np.array([
        [0.40, 0.38, 0.36],  # road: older, warmer asphalt
        [0.90, 0.85, 0.60],  # lane marking: yellowish
        [0.55, 0.50, 0.42],  # sidewalk (unused except gravel paths)
        [0.60, 0.50, 0.40],  # building (farm houses)
        [0.18, 0.38, 0.12],  # vegetation
        [0.55, 0.52, 0.28],  # terrain: fields
        [0.60, 0.75, 0.92],  # sky
        [0.50, 0.10, 0.10],
        [0.20, 0.20, 0.45],
    ], np.float32),
}
#: Share of urban streets with grass verges (terrain) between the road and the sidewalk.
_VERGE_P = 0.6
# Texture amplitude per class (fraction of the colour): vegetation and terrain are busy, sky smooth.
_TEXTURE = np.array([0.10, 0.03, 0.08, 0.10, 0.35, 0.25, 0.02, 0.05, 0.05], np.float32)
# Camera of each fleet: RGB gains (colour cast), vignetting strength, sensor noise, JPEG quality range.
_CAMERA = {
    "urban": dict(gain=(1.0, 1.0, 1.0), vignette=0.15, noise=0.01, jpeg=(85, 95)),
    "rural": dict(gain=(1.08, 1.0, 0.85), vignette=0.45, noise=0.03, jpeg=(35, 60)),
}


@lru_cache(maxsize=8)
def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre column (1, W) and row (H, 1) indices as float32."""
    return np.arange(w, dtype=np.float32)[None, :] + 0.5, np.arange(h, dtype=np.float32)[:, None] + 0.5


def _lut(cls: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per-index lookup of a (K,) or (K, C) float table over a uint8 index map -> (H, W[, C]) float32."""
    t = np.zeros((256,) + table.shape[1:], np.float32)
    t[: len(table)] = table
    if table.ndim == 1:
        return cv2.LUT(cls, t.reshape(1, 256))
    c = table.shape[1]
    return cv2.LUT(cv2.merge([cls] * c), t.reshape(1, 256, c))


@lru_cache(maxsize=16)
def _camera_gain(h: int, w: int, scene: str) -> np.ndarray:
    """Colour cast times radial vignetting of a fleet's dashcam, (H, W, 3) float32 (read-only).

    Vignetting is 1 at the centre and 1 - strength/2 at the edge midpoints. One cached
    same-shape array: numpy broadcasting a (H, W, 1) or (3,) factor over interleaved RGB runs
    inner loops of length 3 and is several times slower than a plain elementwise multiply.
    """
    cam = _CAMERA[scene]
    cols, rows = _axes(h, w)
    r2 = ((cols - w / 2) / (w / 2)) ** 2 + ((rows - h / 2) / (h / 2)) ** 2
    out = ((1.0 - cam["vignette"] * 0.5 * r2)[..., None] * np.array(cam["gain"], np.float32)).astype(np.float32)
    out.setflags(write=False)
    return out


def _smooth1d(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """Smooth random curve of length n, values ~N(0, 1) at ``knots`` control points."""
    k = rng.standard_normal(knots).astype(np.float32)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), k).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two-scale zero-mean texture (H, W): smooth blotches plus fine grain (a fresh array)."""
    small = rng.standard_normal((max(h // 16, 2), max(w // 16, 2))).astype(np.float32)
    tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(tex, 0.6, gaussian_noise(rng, (h, w)), 0.5, 0.0)


def _rgb(c: np.ndarray | tuple[float, float, float]) -> tuple[float, float, float]:
    return (float(c[0]), float(c[1]), float(c[2]))


def _times3(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) with the value repeated per channel, for same-shape cv2 arithmetic."""
    return cv2.merge([a, a, a])


_CAR_COLOURS = ((0.8, 0.8, 0.82), (0.1, 0.1, 0.12), (0.55, 0.08, 0.08), (0.15, 0.25, 0.55), (0.6, 0.6, 0.6),
                (0.85, 0.75, 0.2))


def _draw_vehicle(img: np.ndarray, cls: np.ndarray, depth: np.ndarray, xc: float, yb: float, width: float,
                  rng: np.random.Generator, night: bool) -> None:
    """A car seen from behind: body, cabin, dark windows, tail lights; class 7 everywhere it covers."""
    hgt = width * rng.uniform(0.7, 0.9)
    x0, x1 = int(round(xc - width / 2)), int(round(xc + width / 2))
    y0, y1 = int(round(yb - hgt)), int(round(yb))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    base = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
    shade = rng.uniform(0.85, 1.15)
    colour = tuple(min(c * shade, 1.0) for c in base)
    cab_y = y0 + int(round(hgt * 0.45))
    inset = int(round(width * 0.12))
    cabin = [(x0 + inset, cab_y), (x0 + inset + inset // 2, y0), (x1 - inset - inset // 2, y0), (x1 - inset, cab_y)]
    pts_cabin = np.array(cabin, np.int32)
    cv2.rectangle(cls, (x0, cab_y), (x1 - 1, y1 - 1), VEHICLE, -1)
    cv2.fillConvexPoly(cls, pts_cabin, VEHICLE)
    cv2.rectangle(img, (x0, cab_y), (x1 - 1, y1 - 1), colour, -1)
    cv2.fillConvexPoly(img, pts_cabin, tuple(c * 0.9 for c in colour))
    t = max(1, int(hgt * 0.06))  # window: the cabin shrunk by a frame of t pixels
    win = np.array([(px, min(max(py + d * t, y0), cab_y)) for (px, py), d in zip(cabin, (-1, 1, 1, -1), strict=True)], np.int32)
    cv2.fillConvexPoly(img, win, (0.08, 0.1, 0.12))
    d = depth[min(max(y1 - 1, 0), depth.shape[0] - 1), 0]
    depth[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = d
    lw = max(1, int(round(width * 0.14)))
    ly = cab_y + max(1, int(hgt * 0.12))
    tail = (1.0, 0.15, 0.1) if night else (0.7, 0.1, 0.08)
    cv2.rectangle(img, (x0 + 1, ly), (x0 + lw, ly + max(1, lw // 2)), tail, -1)
    cv2.rectangle(img, (x1 - 1 - lw, ly), (x1 - 2, ly + max(1, lw // 2)), tail, -1)
    cv2.rectangle(img, (x0, y1 - max(1, int(hgt * 0.12))), (x1 - 1, y1 - 1), (0.05, 0.05, 0.05), -1)  # tyres


def _draw_person(img: np.ndarray, cls: np.ndarray, depth: np.ndarray, xc: float, yb: float, height: float,
                 rng: np.random.Generator) -> None:
    """A pedestrian: legs, torso, head; class 8."""
    if height < 4:
        return
    w = height * 0.28
    head = max(1, int(round(height * 0.1)))
    top = yb - height
    shirt = _rgb(rng.uniform(0.05, 0.9, 3))
    trousers = _rgb(rng.uniform(0.05, 0.4, 3))
    xi, yi = int(round(xc)), int(round(yb))
    hip = int(round(yb - height * 0.45))
    neck = int(round(top + 2 * head))
    for canvas, col_t, col_l, col_h in ((cls, PERSON, PERSON, PERSON),
                                        (img, shirt, trousers, (0.8, 0.6, 0.5))):
        cv2.rectangle(canvas, (int(xi - w / 2), hip), (int(xi + w / 2), yi - 1), col_l, -1)
        cv2.ellipse(canvas, (xi, (hip + neck) // 2), (max(1, int(w / 2)), max(1, (hip - neck) // 2 + 1)), 0, 0, 360,
                    col_t, -1)
        cv2.circle(canvas, (xi, int(round(top + head))), head, col_h, -1)
    d = depth[min(max(yi - 1, 0), depth.shape[0] - 1), 0]
    depth[max(int(top), 0):max(yi, 0), max(int(xi - w), 0):max(int(xi + w), 0)] = d


def _draw_tree(img: np.ndarray, cls: np.ndarray, xc: float, yb: float, height: float, green: np.ndarray,
               rng: np.random.Generator) -> None:
    """Trunk plus a lumpy crown of three discs; class 4 (vegetation) for both, as in Cityscapes."""
    if height < 3:
        return
    r = max(1, int(round(height * rng.uniform(0.28, 0.38))))
    cx, cyc = int(round(xc)), int(round(yb - height + r))
    tw = max(1, int(round(height * 0.05)))
    trunk = ((cx - tw, cyc), (cx + tw, int(round(yb))))
    cv2.rectangle(cls, *trunk, VEGETATION, -1)
    cv2.rectangle(img, *trunk, (0.3, 0.22, 0.15), -1)
    for _ in range(3):  # the same discs on image and mask
        centre = (cx + int(rng.normal(0, r * 0.35)), cyc + int(rng.normal(0, r * 0.25)))
        radius = max(1, int(r * rng.uniform(0.7, 1.0)))
        shade = rng.uniform(0.7, 1.2)
        cv2.circle(cls, centre, radius, VEGETATION, -1)
        cv2.circle(img, centre, radius, tuple(min(float(c) * shade, 1.0) for c in green), -1)


def sample(domain: str, index: int, *, seed: int = 0, size: int | tuple[int, int] = DEFAULT_SIZE,
           split: str | None = None) -> dict[str, Any]:
    """Generate dashcam frame ``index`` of ``domain`` (e.g. ``"urban_day"``).

    Deterministic per (domain, seed, split, index). ``size`` is (height, width) or an int for
    square frames; default (128, 256).

    Returns a dict: ``image`` float32 (3, H, W) RGB in [0, 1]; ``mask`` int64 (H, W) classes
    0..8 (see `CLASSES`); ``label`` int (-1: no image-level label); ``domain``, ``index``;
    attributes ``scene`` ("urban"/"rural"), ``timeofday`` and ``weather`` (BDD100K values);
    ``depth`` float32 (H, W) relative distance used for fog (inf for sky).
    """
    check_domain(domain, DOMAINS, "dashcam")
    h, w = check_size(size, MIN_SIZE)
    scene, cond = domain.split("_", 1)
    urban = scene == "urban"
    rng = make_rng(domain, seed, split, index)
    cols, rows = _axes(h, w)
    night = cond == "night"

    # --- layout: horizon, vanishing point, road and sidewalk edges ----------------------------
    hy = h * rng.uniform(0.38, 0.48)
    vx = w * rng.uniform(0.42, 0.58)
    road_half = (rng.uniform(0.7, 0.9) if urban else rng.uniform(0.5, 0.65)) * w / h  # half width per row below horizon
    walk = rng.uniform(0.3, 0.45) * w / h if urban else 0.0
    below = np.maximum(rows - hy, 0.0)  # (H, 1) rows below the horizon
    adx = np.abs(cols - vx)             # (1, W) distance from the vanishing point's column
    g0 = min(max(math.ceil(hy - 0.5), 0), h)  # first ground row: rows (pixel centres) >= hy
    depth_rows = np.full((h, 1), np.inf, np.float32)
    depth_rows[g0:] = (h * 0.05) / np.maximum(rows[g0:] - hy, 0.5)
    depth = np.repeat(depth_rows, w, axis=1)

    cls = np.full((h, w), SKY, np.uint8)
    cls[g0:] = TERRAIN
    if urban:
        # building walls: each column block has a roof line; walls come down to the sidewalk edge
        edge = road_half + walk
        block = max(4, int(w * rng.uniform(0.06, 0.12)))
        nblk = w // block + 2
        heights = rng.uniform(0.05, 0.25, nblk).astype(np.float32) * h
        bh = np.repeat(heights, block)[:w][None, :] * (1 + adx / w * 3.0)
        ground_at_col = hy + adx / edge  # row where the sidewalk's outer edge meets the column
        building = (rows >= hy - bh) & (rows < ground_at_col)
        cls[building] = BUILDING
        np.copyto(depth, (h * 0.05) / np.maximum(ground_at_col - hy, 0.5), where=building)
        cls[g0:][adx < below[g0:] * edge] = SIDEWALK
        # grass verges between kerb and footway on most streets: the source domain must show
        # every class the target has, or no label-free method can learn it (terrain was 0 % of
        # urban pixels and 30 % of rural ones, a gap no adaptation could close)
        if rng.random() < _VERGE_P:
            verge = rng.uniform(0.25, 0.5) * walk
            cls[g0:][(adx >= below[g0:] * road_half) & (adx < below[g0:] * (road_half + verge))] = TERRAIN
    else:
        # tree line / hedges on the horizon, fields below
        top = hy - h * (0.04 + 0.06 * np.abs(_smooth1d(rng, w, 12)))[None, :]
        cls[(rows >= top) & (rows < hy + 1)] = VEGETATION
        if rng.random() < 0.5:  # a distant farm house
            bx = int(rng.uniform(0.05, 0.8) * w)
            bw_, bh_ = int(w * rng.uniform(0.05, 0.1)), int(h * rng.uniform(0.05, 0.09))
            cls[int(hy) - bh_:int(hy) + 1, bx:bx + bw_] = BUILDING
    road = adx < below[g0:] * road_half  # (H - g0, W): the ground rows only
    cls[g0:][road] = ROAD

    # lane markings: dashed centre line (dash length grows toward the camera), solid edges in town
    phase = rng.random()
    dash = ((1.0 / np.maximum(below[g0:], 0.5)) * h * 0.9 + phase) % 1.0 < 0.5  # (H - g0, 1), perspective dashes
    centre = adx < below[g0:] * 0.035 * (w / h) + 0.3
    cls[g0:][centre & dash & road] = LANE
    if urban or rng.random() < 0.5:
        cls[g0:][road & (adx > below[g0:] * (road_half - 0.05 * w / h))] = LANE

    # --- colour: per-class palette with jitter and texture -----------------------------------
    # Condition changes that act per class are folded into the palette: the wet road's tint
    # and the night sky (the scene is dimmed to 0.16 below, so it is stored undimmed).
    pal = _PALETTE[scene] * rng.uniform(0.85, 1.15, (9, 1)).astype(np.float32)
    if cond == "rain":
        pal[ROAD] *= np.array([0.9, 0.95, 1.1], np.float32)  # wet, bluish, reflective
    if night:
        pal[SKY] = np.array([0.02, 0.03, 0.07], np.float32) / 0.16
    colour_idx = cls
    if urban:  # windows: a grid on facades, coloured through a tenth palette entry (no extra pass)
        wy = ((rows * (1 / max(h * 0.05, 1))) % 1.0 < 0.55)
        wx = ((cols * (1 / max(w * 0.025, 1))) % 1.0 < 0.5)
        colour_idx = np.where((cls == BUILDING) & (wy & wx), np.uint8(9), cls)
    lit, glow = (0.9, 0.55) if night else (0.3, 0.05)
    window = pal[BUILDING] * lit + glow * np.array([1.0, 0.85, 0.5], np.float32)
    img = _lut(colour_idx, np.vstack([pal, window]))  # (H, W, 3); cv2.LUT is ~5x faster than pal[cls]
    tex = _texture(rng, h, w)
    tex *= _lut(colour_idx, np.append(_TEXTURE, np.float32(0.05)))
    tex += 1.0
    top = min(int(np.ceil(hy)) + 1, h)  # sky lies above the horizon: touch only those rows
    if not night:  # sky gradient, lighter toward the horizon, in place of the sky's texture
        grad = 0.8 + 0.35 * np.clip(rows[:top] / max(hy, 1.0), 0, 1)  # (top, 1)
        np.copyto(tex[:top], grad, where=cls[:top] == SKY)
    else:
        np.copyto(tex[:top], np.float32(1.0), where=cls[:top] == SKY)
    cv2.multiply(img, _times3(tex), dst=img)

    # --- objects, far to near --------------------------------------------------------------
    objs: list[tuple[float, str, float]] = []  # (bottom row, kind, x centre)
    n_cars = rng.integers(3, 9) if urban else rng.integers(0, 3)
    for _ in range(n_cars):
        yb = hy + (h - hy) * rng.uniform(0.15, 0.9) ** 2
        lane = rng.uniform(-0.75, 0.75)
        objs.append((yb, "car", vx + lane * (yb - hy) * road_half))
    n_people = rng.integers(2, 8) if urban else int(rng.random() < 0.15)
    for _ in range(n_people):
        yb = hy + (h - hy) * rng.uniform(0.1, 1.0) ** 1.5
        side = -1.0 if rng.random() < 0.5 else 1.0
        off = road_half + (walk if urban else 0.15 * w / h) * rng.uniform(0.2, 0.9)
        objs.append((yb, "person", vx + side * off * (yb - hy)))
    n_trees = rng.integers(0, 4) if urban else rng.integers(3, 10)
    green = pal[VEGETATION]
    for _ in range(n_trees):
        yb = hy + (h - hy) * rng.uniform(0.05, 0.9) ** 1.5
        side = -1.0 if rng.random() < 0.5 else 1.0
        off = (road_half + walk * 0.85) if urban else road_half + rng.uniform(0.1, 1.5) * w / h
        objs.append((yb, "tree", vx + side * off * (yb - hy)))
    objs.sort(key=lambda o: o[0])
    for yb, kind, xc in objs:
        scale = max(yb - hy, 0.0)
        if kind == "car":
            _draw_vehicle(img, cls, depth, xc, yb, scale * road_half * rng.uniform(0.55, 0.75), rng, night)
        elif kind == "person":
            _draw_person(img, cls, depth, xc, yb, scale * rng.uniform(0.75, 0.95) * (w / h) * 0.9, rng)
        else:
            _draw_tree(img, cls, xc, yb, scale * rng.uniform(1.2, 2.2) * (w / h) * 0.9, green, rng)

    # --- condition: light, fog, rain (same-shape cv2 arithmetic on the interleaved image) -----
    if cond == "dusk":
        cv2.multiply(img, (1.05 * 0.75, 0.75 * 0.75, 0.55 * 0.75, 0.0), dst=img)
        warm = np.clip(1 - rows[:top] / max(hy, 1), 0, 1)[..., None] * np.array([0.35, 0.12, 0.0], np.float32)
        sky = (cls[:top] == SKY).view(np.uint8)
        cv2.add(img[:top], np.ascontiguousarray(np.broadcast_to(warm, (top, w, 3))), dst=img[:top], mask=sky)
    elif night:
        img *= 0.16
        glow_src = []  # emissive lights: drawn undimmed, and they bloom
        for yb, kind, xc in objs:  # headlights / tail lights glow
            if kind == "car":
                r = max(1, int((yb - hy) * 0.08))
                glow_src.append(((int(xc), int(yb - (yb - hy) * 0.2)), r, (0.9, 0.2, 0.15)))
        if urban:  # street lamps along the sidewalk edges
            for k in range(1, 5):
                yl = hy + (h - hy) * (k / 5) ** 1.5
                for side in (-1, 1):
                    x = int(vx + side * (road_half + walk * 0.5) * (yl - hy))
                    glow_src.append(((x, int(yl - (yl - hy) * 1.8)), max(1, int((yl - hy) * 0.06)), (1.0, 0.9, 0.6)))
        for centre, r, colour in glow_src:
            cv2.circle(img, centre, r, colour, -1)
        # bloom: what is brighter than 0.5, blurred, added twice; computed at 1/4 resolution
        # (the glow is smooth) so the wide blur costs 1/16 of a full-size one
        bright = cv2.subtract(img, (0.5, 0.5, 0.5, 0.0))
        np.maximum(bright, 0.0, out=bright)
        q = 4
        small = cv2.resize(bright, (max(w // q, 1), max(h // q, 1)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(1.0, w / 64) / q)
        bloom = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(bloom, 2.0, img, dst=img)
    elif cond == "fog":
        t = np.minimum(depth, 50.0) * -rng.uniform(0.6, 1.0)  # sky: depth inf -> transmission e^-30, nil
        cv2.exp(t, t)  # transmission
        haze = float(rng.uniform(0.7, 0.8))
        img -= haze
        cv2.multiply(img, _times3(t), dst=img)
        img += haze
    elif cond == "rain":
        img *= 0.7
        img += 0.08
        n = int(w * 0.4)
        p = rng.random((n, 3))  # streak start x, start y, length
        x0, y0 = p[:, 0] * w, p[:, 1] * h
        ln = (0.05 + 0.07 * p[:, 2]) * h
        seg = np.stack([x0, y0, x0 + ln * 0.25, y0 + ln], axis=1).astype(np.int32).reshape(n, 2, 2)
        streaks = np.zeros((h, w), np.float32)
        cv2.polylines(streaks, list(seg), False, 0.25, 1)
        cv2.add(img, _times3(streaks), dst=img)
        img = cv2.GaussianBlur(img, (0, 0), max(0.5, w / 256))

    # --- camera: colour cast, vignetting, noise, JPEG --------------------------------------
    cam = _CAMERA[scene]
    cv2.multiply(img, _camera_gain(h, w, scene), dst=img)
    # noise, then 8 bits with rounding and saturation, in one pass
    u8 = cv2.addWeighted(img, 255.0, gaussian_noise(rng, (h, w, 3)), 255.0 * cam["noise"], 0.0, dtype=cv2.CV_8U)
    q = int(rng.integers(cam["jpeg"][0], cam["jpeg"][1] + 1))
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])
    if ok:  # JPEG artefacts: blocking and ringing, as dashcams store their video
        u8 = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    image = np.empty((3, h, w), np.float32)
    np.multiply(u8.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=image)

    return {
        "image": image,
        "label": -1,
        "mask": cls.astype(np.int64),
        "domain": domain,
        "index": int(index),
        "scene": scene,
        "timeofday": _TIMEOFDAY[cond],
        "weather": _WEATHER[cond],
        "depth": depth,
    }


class SynthDataset(SynthDatasetBase):
    """``n`` generated dashcam frames of one domain as a torch Dataset.

    Items: ``image`` float32 (3, H, W), ``label`` int64 scalar (-1: no image label), ``mask`` int64
    (H, W) classes 0..8, ``domain``, ``index``, ``scene``, ``timeofday``, ``weather``.

    Example:
        >>> ds = SynthDataset("urban_day", 200, size=(64, 128), split="train")
        >>> ds[0]["mask"].shape
        torch.Size([64, 128])
    """

    _sample = staticmethod(sample)
    _domains = DOMAINS
    _attributes = ATTRIBUTES
    _default_size = DEFAULT_SIZE
    _min_size = MIN_SIZE


def export(out_dir: str | os.PathLike[str], domains: str | list[str] | tuple[str, ...] = (DEFAULT_SOURCE, DEFAULT_TARGET),
           n_per_domain: int = 100, *, seed: int = 0, size: int | tuple[int, int] = DEFAULT_SIZE,
           splits: tuple[float, float, float] = (0.6, 0.2, 0.2), progress: bool = True) -> Path:
    """Write frames (8-bit RGB PNG), class masks (8-bit PNG, 0..8) and ``manifest.csv``.

    Columns: image, label (-1), mask, domain, split, scene, timeofday, weather; paths relative
    to ``out_dir``; every file written atomically. Returns the manifest path.
    """
    return export_generic(sample, DOMAINS, "dashcam", out_dir, domains, n_per_domain, seed=seed,
                          size=size, min_size=MIN_SIZE, splits=splits, attributes=ATTRIBUTES,
                          image_to_array=to_uint8_rgb, progress=progress)
