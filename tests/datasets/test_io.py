"""Readers: every format yields the same orientation and the documented intensity scale."""

from __future__ import annotations

import numpy as np
import pytest

from shiftkit.datasets import ImageReadError, read_image, read_mask
from shiftkit.datasets.errors import DataError


def _nifti(path, arr_hw):
    """Write a 2-D image the way ITK / SimpleITK / MONAI do: NIfTI axis i = column (x)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr_hw.T), np.eye(4)), str(path))
    return path


def test_same_orientation_png_jpeg_dicom_nifti(tmp_path, ramp_image, write_png, write_dicom):
    """A non-square image reads back identically (shape (1, 5, 7), same pixels) from every format."""
    import cv2

    expected = ramp_image.astype(np.float32)[None] / 255.0
    paths = {
        "png8": write_png(tmp_path / "a.png", ramp_image),
        "png16": write_png(tmp_path / "b.png", ramp_image.astype(np.uint16) * 257),
        "dicom": write_dicom(tmp_path / "c.dcm", ramp_image.astype(np.uint16) * 257, bits_stored=16),
        "nifti": _nifti(tmp_path / "d.nii.gz", ramp_image),
    }
    # JPEG is lossy: a smooth, large, non-square ramp keeps the error small and orientation obvious
    big = cv2.resize(ramp_image, (70, 50), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "e.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 100])
    for name, p in paths.items():
        img = read_image(p)
        assert img.shape == (1, 5, 7), name
        assert img.dtype == np.float32
        np.testing.assert_allclose(img, expected, atol=1e-6, err_msg=name)
    jpg = read_image(tmp_path / "e.jpg")
    assert jpg.shape == (1, 50, 70)
    assert np.abs(jpg[0] * 255 - big).max() <= 3


def test_monai_pil_reader_transposes_but_we_do_not(tmp_path, ramp_image, write_png):
    """The pitfall this module exists for: MONAI's default PIL reader returns (W, H)."""
    from monai.transforms import LoadImage

    p = write_png(tmp_path / "a.png", ramp_image)
    monai_img = np.asarray(LoadImage(image_only=True, reader="PILReader")(str(p)))
    assert monai_img.shape == (7, 5)  # transposed
    fixed = np.asarray(LoadImage(image_only=True, reader="PILReader", reverse_indexing=False)(str(p)))
    np.testing.assert_array_equal(fixed, ramp_image)
    np.testing.assert_array_equal(read_image(p)[0] * 255, ramp_image.astype(np.float32))


def test_rgb_png_keeps_channel_order_and_converts(tmp_path, write_png):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red only
    p = write_png(tmp_path / "red.png", rgb)
    img = read_image(p)
    assert img.shape == (3, 4, 6)
    np.testing.assert_allclose(img[:, 0, 0], [200 / 255, 0, 0], atol=1e-6)
    grey = read_image(p, channels=1)
    np.testing.assert_allclose(grey[0, 0, 0], 0.299 * 200 / 255, atol=1e-6)
    rgb16 = write_png(tmp_path / "red16.png", rgb.astype(np.uint16) * 257)
    np.testing.assert_allclose(read_image(rgb16)[:, 0, 0], [200 / 255, 0, 0], atol=1e-6)
    assert read_image(write_png(tmp_path / "g.png", rgb[..., 0]), channels=3).shape == (3, 4, 6)


def test_dicom_monochrome1_is_inverted(tmp_path, ramp_image, write_dicom):
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", ramp_image.astype(np.uint16) * 257, bits_stored=16))
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", ramp_image.astype(np.uint16) * 257, bits_stored=16,
                                photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_dicom_rescale_and_window(tmp_path, write_dicom):
    """Stored s -> HU = 2 s - 1000; window centre 40, width 400 maps [-160, 240] HU onto [0, 1]."""
    stored = np.array([[0, 420, 500], [520, 620, 2000]], np.uint16)
    p = write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1000.0, window=(40.0, 400.0),
                    bits_stored=16)
    img = read_image(p)[0]
    hu = stored.astype(np.float64) * 2 - 1000
    # DICOM linear window: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    expected = np.clip((hu - (40 - 0.5)) / (400 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=2e-4)
    # without a window the rescaled values are min-max normalised
    q = write_dicom(tmp_path / "nowin.dcm", stored, slope=2.0, intercept=-1000.0, bits_stored=16)
    np.testing.assert_allclose(read_image(q)[0], (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_read_mask_formats_agree(tmp_path, write_png):
    lab = np.array([[0, 1, 2, 0, 0, 3, 1], [1, 1, 0, 0, 2, 2, 0], [0, 0, 0, 4, 0, 0, 0]], np.uint8)
    a = read_mask(write_png(tmp_path / "m.png", lab))
    b = read_mask(_nifti(tmp_path / "m.nii.gz", lab.astype(np.int16)))
    c = read_mask(write_png(tmp_path / "m3.png", np.repeat(lab[..., None], 3, axis=2)))
    for m in (a, b, c):
        assert m.dtype == np.int64 and m.shape == (3, 7)
        np.testing.assert_array_equal(m, lab)


def test_coloured_mask_rejected(tmp_path, write_png):
    col = np.zeros((3, 3, 3), np.uint8)
    col[0, 0] = (255, 0, 0)
    with pytest.raises(ImageReadError, match="m.png"):
        read_mask(write_png(tmp_path / "m.png", col))


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"not an image at all"])
def test_corrupt_png_names_the_file(tmp_path, content):
    p = tmp_path / "broken.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(p)
    assert "broken.png" in str(info.value) and info.value.path == str(p)


def test_truncated_png(tmp_path, write_png):
    good = write_png(tmp_path / "g.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = good.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(bad)


def test_truncated_dicom_names_the_file(tmp_path, ramp_image, write_dicom):
    p = write_dicom(tmp_path / "full.dcm", np.tile(ramp_image.astype(np.uint16), (20, 20)))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(p.read_bytes()[:-500])
    with pytest.raises(ImageReadError, match="cut.dcm"):
        read_image(cut)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(ImageReadError, match="junk.dcm"):
        read_image(junk)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png.*not found"):
        read_image(tmp_path / "nope.png")
    other = tmp_path / "x.xyz"
    other.write_bytes(b"abc")
    with pytest.raises(ImageReadError, match="unsupported"):
        read_image(other)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)
    # shiftkit errors are ValueErrors too, so generic handlers keep working
    assert issubclass(ImageReadError, DataError) and issubclass(ImageReadError, ValueError)


def test_dicom_without_suffix_is_detected(tmp_path, ramp_image, write_dicom):
    p = write_dicom(tmp_path / "IMG0001", ramp_image.astype(np.uint16))
    assert read_image(p).shape == (1, 5, 7)


def test_float_nifti_with_nan_rejected(tmp_path):
    arr = np.ones((4, 5), np.float32)
    arr[1, 1] = np.nan
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(_nifti(tmp_path / "n.nii.gz", arr))


_MAGIC = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".jpg": b"\xff\xd8\xff\xe0",
    ".dcm": b"\x00" * 128 + b"DICM",
    ".nii": b"\x5c\x01\x00\x00",
    ".bmp": b"BM",
    ".tif": b"II*\x00",
}


def _fuzz_cases():
    from hypothesis import strategies as st

    return st.tuples(st.sampled_from(sorted(_MAGIC)), st.binary(max_size=300), st.booleans())


def test_fuzz_read_image_and_mask_only_raise_image_read_errors(tmp_path):
    """Random bytes behind real magic numbers: the readers return arrays or raise ImageReadError."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_fuzz_cases())
    def check(case):
        suffix, body, with_magic = case
        p = tmp_path / f"f{suffix}"
        p.write_bytes((_MAGIC[suffix] if with_magic else b"") + body)
        for reader in (read_image, read_mask):
            try:
                out = reader(p)
            except ImageReadError as exc:
                assert exc.path == str(p)
                continue
            assert isinstance(out, np.ndarray)

    check()
