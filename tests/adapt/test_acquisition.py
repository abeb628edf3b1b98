"""Acquisition and frame matching: the blur, noise and borders measured on unlabelled target
images are the ones applied to source images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftkit.adapt.augment.acquisition import AcquisitionMatch, fit_acquisition, radial_log_spectrum
from shiftkit.adapt.augment.adapter import TargetStyle
from shiftkit.adapt.augment.framing import FrameMatch, measure_frame, measure_frames
from shiftkit.datasets.synth import radiograph


def _images(n: int = 48, size: int = 48) -> list[np.ndarray]:
    """City radiographs squeezed into [0.25, 0.75], so added noise is never clipped."""
    return [0.25 + 0.5 * np.moveaxis(radiograph.sample("city", i, seed=3, size=size)["image"], 0, -1)
            for i in range(n)]


def _degrade(images: list[np.ndarray], sigma: float, noise: float) -> list[np.ndarray]:
    t = AcquisitionMatch(sigma, noise, jitter=0.0)
    return [t.apply(x, sigma=sigma, noise=noise, noise_seed=i) for i, x in enumerate(images)]


@pytest.mark.parametrize(("sigma", "noise"), [(0.0, 0.0), (0.7, 0.0), (1.4, 0.1), (0.5, 0.2)])
def test_the_fit_recovers_a_known_blur_and_noise(sigma: float, noise: float) -> None:
    src = _images()
    fit = fit_acquisition(src, _degrade(src, sigma, noise))
    assert abs(fit.sigma - sigma) <= 0.1, fit  # one grid step at most
    assert abs(fit.noise - noise) <= 0.03, fit
    assert fit.distance <= fit.distance_identity


def test_a_contrast_gain_is_not_read_as_blur_or_noise() -> None:
    src = _images()
    flat = [0.5 + 0.5 * (x - 0.5) for x in src]  # half the contrast: a gain, not acquisition
    fit = fit_acquisition(src, flat)
    assert fit.sigma == 0.0 and fit.noise == 0.0


def test_blur_takes_power_from_high_frequencies_only() -> None:
    src = _images()
    before, after = radial_log_spectrum(src), radial_log_spectrum(_degrade(src, 1.0, 0.0))
    drop = before - after
    assert drop[-1] > 2.0 and drop[0] < 0.2 and np.all(np.diff(drop) > -0.05)


def test_the_transform_is_pixel_only_reproducible_and_in_range() -> None:
    img = np.repeat(_images(1, 32)[0], 3, axis=-1)
    t = AcquisitionMatch(1.0, 0.2)
    a = t.apply(img, sigma=1.0, noise=0.2, noise_seed=5)
    assert a.shape == img.shape and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, t.apply(img, sigma=1.0, noise=0.2, noise_seed=5))
    assert np.allclose(a[..., 0], a[..., 2])  # one sensor: grey noise, no colour speckle
    params = [t.get_params() for _ in range(50)]
    assert all(0.75 <= p["sigma"] <= 1.25 and 0.15 <= p["noise"] <= 0.25 for p in params)


def test_target_style_fits_the_target_site_and_refuses_without_source() -> None:
    class _Items(torch.utils.data.Dataset):
        def __init__(self, domain: str) -> None:
            self.domain = domain

        def __len__(self) -> int:
            return 24

        def __getitem__(self, i: int) -> dict:
            item = radiograph.sample(self.domain, i, seed=1, size=48)
            return {"image": torch.from_numpy(item["image"]), "label": item["label"]}

    style = TargetStyle(restyle=None, acquisition=True)
    out = style.fit_transform(_Items("city"), _Items("rural"), seed=0)
    # rural: lower resolution, twice the detector blur and quantum noise of city
    assert style.acquisition_fit_.sigma > 0.2 and style.acquisition_fit_.noise > 0.0
    assert tuple(out[0]["image"].shape) == (1, 48, 48)
    with pytest.raises(Exception, match="source and target"):
        TargetStyle(restyle=None, acquisition=True).build_augmenter(_Items("rural"), 0, source=None)


# --------------------------------------------------------------------------------------------- framing


def test_a_flat_border_is_measured_per_side_and_painted_back() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.8, (40, 50, 3)).astype(np.float32)
    img[:4] = 0.92          # top: 4 of 40 rows
    img[:, 45:] = 0.92      # right: 5 of 50 columns (shutters share one value, so corners are flat)
    widths, values = measure_frame(img)
    assert np.allclose(widths, [0.1, 0.0, 0.0, 0.1]) and np.allclose(values[[0, 3]], 0.92)
    plain = rng.uniform(0.2, 0.8, (80, 100, 3)).astype(np.float32)  # another size: fractions carry over
    out = FrameMatch([(widths, values)]).apply(plain, frame=0)
    assert np.allclose(out[:8], 0.92) and np.allclose(out[:, 90:], 0.92)
    assert np.array_equal(out[8:, :90], plain[8:, :90])  # the rest untouched


def test_framing_is_the_identity_without_flat_borders_and_finds_the_rural_collimation() -> None:
    noisy = [np.random.default_rng(i).uniform(0, 1, (32, 32, 3)).astype(np.float32) for i in range(4)]
    frames = measure_frames(noisy)
    assert all(w.max() == 0 for w, _ in frames) and not FrameMatch(frames).any_frame
    assert np.array_equal(FrameMatch(frames).apply(noisy[0], frame=1), noisy[0])
    city = measure_frames(_images(40))
    rural = measure_frames([np.moveaxis(radiograph.sample("rural", i, seed=3, size=48)["image"], 0, -1)
                            for i in range(40)])
    # rural shutters: 4-11 % of each side; city: 0-2 %
    assert np.mean([w.mean() for w, _ in rural]) > 3 * np.mean([w.mean() for w, _ in city])


def test_target_style_frames_only_when_the_target_has_frames() -> None:
    def items(domain: str) -> list[np.ndarray]:
        return [np.moveaxis(radiograph.sample(domain, i, seed=2, size=32)["image"], 0, -1) for i in range(16)]

    src = items("city")[0]
    framed = TargetStyle(p=1.0).build_augmenter(items("rural"), seed=0)
    out = np.asarray(framed(src, seed=0)["image"])
    widths, _ = measure_frame(out)
    assert widths.min() >= 0.03  # rural shutters: at least 4 % of every side (1 px at 32 px)
    flat_free = [np.random.default_rng(i).uniform(0, 1, (32, 32, 1)).astype(np.float32) for i in range(8)]
    on = TargetStyle(p=1.0).build_augmenter(flat_free, seed=0)(src, seed=3)["image"]
    off = TargetStyle(p=1.0, frame=False).build_augmenter(flat_free, seed=0)(src, seed=3)["image"]
    assert np.array_equal(on, off)  # nothing to match: exactly the augmentation without the step


def test_restyled_validation_is_framed_like_the_target_and_unchanged_without_frames() -> None:
    from shiftkit.adapt.augment.restyle import load_target_pool, target_restyle
    from shiftkit.adapt.harness.auto_select import restyled_validation

    def chw(domain: str, n: int) -> np.ndarray:
        return np.stack([radiograph.sample(domain, i, seed=4, size=32)["image"] for i in range(n)])

    val = [{"image": x} for x in chw("city", 6)]
    framed = restyled_validation(val, chw("rural", 12), "classification")
    # every validation image carries a rural-sized frame on every side (2 px or more at 32 px; the
    # city originals have at most 1 px); FDA's low-frequency swap leaves the band nearly, not
    # exactly, flat, hence the looser tolerance
    assert all(measure_frame(np.moveaxis(x, 0, -1), tol=0.03)[0].min() >= 0.06 for x in framed)
    assert all(measure_frame(np.moveaxis(v["image"], 0, -1))[0].max() < 0.06 for v in val)
    plain = np.random.default_rng(0).uniform(0, 1, (12, 1, 32, 32)).astype(np.float32)  # no flat borders
    got = restyled_validation(val, plain, "classification")
    aug = target_restyle(load_target_pool(plain, max_images=256, seed=0), method="mixed", strength=1.0, seed=0)
    want = np.stack([np.moveaxis(np.asarray(aug(np.moveaxis(v["image"], 0, -1), seed=i)["image"],
                                            np.float32).reshape(32, 32, 1), -1, 0) for i, v in enumerate(val)])
    assert np.array_equal(got, np.clip(want, 0.0, 1.0))  # the restyling alone, draw for draw
