"""Drawing primitives of the procedural radiographs: coordinate grids and boxes, soft-edged
ellipses and blobs, rib stripes, smooth noise, lesion fields, rotation and resizing, and the
markers a console burns in. :mod:`shiftkit.datasets.synth.radiograph` composes them into
films; nothing here knows a site's settings beyond what it is passed."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ._common import glyph, paste_glyph

if TYPE_CHECKING:
    from .radiograph import SiteProfile

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
