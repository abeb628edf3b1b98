"""Fuzzing the three doors user data comes in by: manifests, run configs, image files.

Hypothesis drives each reader with generated input (broken tables, wrong types, flipped and
truncated bytes of real PNG/JPEG/TIFF/DICOM/NIfTI files, pure noise). The contract under
test: a reader either returns data that meets its documented shape and range, or raises one
of shiftkit's own errors (`ShiftkitError` subclasses) whose message names the bad file, row
or key. Any other exception escaping (ValueError from pathlib, UnicodeDecodeError, a pydicom
or nibabel internal error...) is a failure.

Size: 5,000 generated cases in total by default (`FUZZ_SCALE=4` for a longer local run);
`derandomize=True` so CI sees the same cases every time, `FUZZ_RANDOM=1` to explore.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftkit.adapt.job.config import RunConfig, load_config, parse_config
from shiftkit.datasets import load_manifest, read_image, read_mask
from shiftkit.datasets.errors import ConfigError, ImageReadError, ManifestError, ShiftkitError

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ============================================================================ manifests

ROOT_FILES = ("a.png", "b.png", "sub/c.png", "m.png")


@pytest.fixture(scope="module")
def manifest_root(tmp_path_factory) -> Path:
    """A data root with real images, an outside file and symlinks in and out of the root."""
    import cv2

    base = tmp_path_factory.mktemp("fuzz_manifest")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    for name in ROOT_FILES:
        cv2.imwrite(str(root / name), img)
    cv2.imwrite(str(base / "outside.png"), img)
    os.symlink(base / "outside.png", root / "link_out.png")
    os.symlink(root / "a.png", root / "link_in.png")
    os.symlink(base, root / "dir_out")
    return root


PATH_VALUES = [
    "a.png", "b.png", "sub/c.png", "./a.png", "sub/../a.png", "../outside.png", "../root/a.png",
    "link_out.png", "link_in.png", "dir_out/outside.png", "dir_out/root/a.png", "/etc/passwd",
    "missing.png", "", " ", "sub", "sub/", ".", "..", "a.png\x00.txt", "x" * 300, "a" * 5000 + ".png",
    "~/a.png", "C:\\a.png", "%s", "a.png;rm -rf /", "\udcff.png", "ä/ö.png", "sub//c.png",
]
LABEL_VALUES = ["0", "1", "2", "-1", "", " ", "1.0", "1.5", "-2", "nan", "NaN", "inf", "-inf", "1e400",
                "99999999999999999999999", "0x1", "yes", "None", "true", "1_000"]
SPLIT_VALUES = ["train", "val", "test", "TRAIN", " val ", "", "validation", "holdout", "nan"]

cell_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
path_cell = st.one_of(st.sampled_from(PATH_VALUES), cell_text)
label_cell = st.one_of(st.sampled_from(LABEL_VALUES), cell_text)
split_cell = st.one_of(st.sampled_from(SPLIT_VALUES), cell_text)
domain_cell = st.one_of(st.sampled_from(["city", "rural", "", " ", "NA", "null"]), cell_text)
column_name = st.one_of(
    st.sampled_from(["image", "label", "mask", "domain", "split", "sex", "age", " image", "Image", "", "image"]),
    cell_text,
)


@st.composite
def manifest_tables(draw) -> list[list[str]]:
    """A header and rows: mostly the core columns, sometimes dropped, duplicated or renamed."""
    core = ["image", "label", "mask", "domain", "split"]
    cols = [c for c in core if draw(st.floats(0, 1)) < 0.85]
    cols += draw(st.lists(column_name, max_size=3))
    cols = draw(st.permutations(cols))
    n = draw(st.integers(0, 6))
    makers = {"image": path_cell, "mask": st.one_of(st.just(""), path_cell), "label": label_cell,
              "split": split_cell, "domain": domain_cell}
    rows = [[draw(makers.get(c, cell_text)) for c in cols] for _ in range(n)]
    if rows and draw(st.booleans()):  # ragged rows: too many or too few cells
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = rows[i][: draw(st.integers(0, len(cols)))] + draw(st.lists(cell_text, max_size=2))
    return [list(cols), *rows]


def _write_table(path: Path, table: list[list[str]], sep: str) -> None:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep).writerows(table)
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))


_PROBLEM = re.compile(
    r"^(row \d+: |missing required column|duplicate column|no rows|unreadable table|manifest file not found|"
    r"unsupported manifest type|cannot read parquet)"
)


def _check_manifest_result(path: Path, root: Path, check_files: bool, allow_outside: bool) -> None:
    try:
        frame = load_manifest(path, check_files=check_files, allow_outside_root=allow_outside)
    except ManifestError as exc:
        assert str(path) in str(exc), str(exc)  # names the file
        assert exc.problems, "a ManifestError must list its problems"
        for problem in exc.problems:
            assert _PROBLEM.match(problem), f"problem does not name a row/column: {problem!r}"
        return
    except ShiftkitError as exc:
        assert str(path) in str(exc), str(exc)
        return
    # A manifest that loads meets the documented contract.
    assert len(frame) > 0
    real_root = root.resolve()
    for col in ("image", "mask"):
        if col not in frame.columns:
            continue
        for value in frame[col]:
            if value is None and col == "mask":
                continue
            p = Path(value)
            assert p.is_absolute(), value
            if not allow_outside:
                assert p == real_root or real_root in p.parents, f"{value} escaped {real_root}"
            if check_files:
                assert p.is_file(), value
    assert frame["domain"].map(lambda d: isinstance(d, str) and d.strip() != "").all()
    if "label" in frame.columns:
        assert frame["label"].dtype == np.int64 and (frame["label"] >= -1).all()
    if "split" in frame.columns:
        assert frame["split"].map(lambda s: s is None or s in ("train", "val", "test")).all()


@fuzz_settings(1300)
@given(table=manifest_tables(), sep=st.sampled_from([",", "\t"]), check_files=st.booleans(),
       allow_outside=st.booleans())
def test_fuzz_manifest_tables(manifest_root: Path, table, sep: str, check_files: bool, allow_outside: bool) -> None:
    path = manifest_root / ("manifest.tsv" if sep == "\t" else "manifest.csv")
    _write_table(path, table, sep)
    _check_manifest_result(path, manifest_root, check_files, allow_outside)


@fuzz_settings(300)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".parquet", ".txt", ".xlsx", ""]))
def test_fuzz_manifest_raw_bytes(manifest_root: Path, data: bytes, suffix: str) -> None:
    path = manifest_root / f"raw_manifest{suffix}"
    if suffix == "":
        path = manifest_root / "raw_manifest_nosuffix"
    path.write_bytes(data)
    _check_manifest_result(path, manifest_root, True, False)


# ============================================================================ configs

def _known_keys() -> dict:
    """Top-level keys and each section's keys, read from the config models themselves so a new
    section (a method's own settings, say) is known here the moment it exists."""
    from pydantic import BaseModel

    known: dict = {None: sorted(RunConfig.model_fields)}
    for name, field in RunConfig.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            known[name] = sorted(kind.model_fields)
    return known


KNOWN_KEYS = _known_keys()
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["radiograph", "dashcam", "tiny", "cpu", "auto", "classification", "segmentation",
                     "source_only", "dann", "adabn", "1e-3", "20", "../x", "a\x00b", "runs"]),
)
values = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


@st.composite
def config_dicts(draw) -> object:
    if draw(st.integers(0, 19)) == 0:  # sometimes not a mapping at all
        return draw(values)
    out: dict = {}
    for key in draw(st.lists(st.one_of(st.sampled_from(KNOWN_KEYS[None]), st.text(max_size=8)), max_size=6)):
        if key in KNOWN_KEYS and draw(st.booleans()):
            sub = {k: draw(values) for k in draw(st.lists(st.one_of(st.sampled_from(KNOWN_KEYS[key]),
                                                                    st.text(max_size=8)), max_size=4))}
            out[key] = sub
        elif key == "methods":
            out[key] = draw(st.one_of(values, st.lists(st.sampled_from(
                ["source_only", "dann", "adabn", "augment", "importance_weighted", "target_oracle", "x"]),
                max_size=4)))
        else:
            out[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:  # non-string keys
        out[draw(st.one_of(st.integers(), st.none(), st.booleans()))] = draw(values)
    return out


def _unknown_keys(raw: dict) -> list[str]:
    found = []
    for key, value in raw.items():
        if not isinstance(key, str) or key not in KNOWN_KEYS[None]:
            found.append(str(key))
        elif key in KNOWN_KEYS and isinstance(value, dict):
            found += [f"{key}.{k}" for k in value if not isinstance(k, str) or k not in KNOWN_KEYS[key]]
    return found


@fuzz_settings(1100)
@given(raw=config_dicts())
def test_fuzz_parse_config(raw) -> None:
    try:
        cfg = parse_config(raw, source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and str(exc).startswith("fuzz.yaml"), str(exc)
        if isinstance(raw, dict):
            text = "\n".join(exc.problems)
            for key in _unknown_keys(raw):
                assert key in text, f"unknown key {key!r} not named in {exc.problems}"
        return
    assert isinstance(cfg, RunConfig) and isinstance(raw, dict)
    assert not _unknown_keys(raw)


yaml_docs = st.one_of(
    config_dicts().map(lambda d: yaml.safe_dump(d, allow_unicode=True) if isinstance(d, dict) else repr(d)),
    st.text(max_size=200),
    st.sampled_from([
        "", "---\n...\n", "name: [", "!!python/object/apply:os.system ['touch pwned']",
        "a: &a [*a]", "data: {benchmark: radiograph, manifest: m.csv}", "train:\n  epochs: 0\n",
        "- 1\n- 2\n", "name: 'x'\nname: 'y'\n", "\t bad indent:\n  - x", "data: !!binary aGVsbG8=",
        "a: &x 1\nb: *y\n", "%YAML 9.9\n---\na: 1", "\ufeffname: x\n", "train: {lr: .nan}",
        "? [a, b]\n: c\n",
    ]),
)


@fuzz_settings(500)
@given(doc=yaml_docs, mutate=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=3)), max_size=3))
def test_fuzz_load_config_files(tmp_path_factory, doc: str, mutate) -> None:
    data = bytearray(doc.encode("utf-8", "surrogatepass"))
    for pos, junk in mutate:  # splice junk bytes (may break UTF-8 or YAML)
        pos = min(pos, len(data))
        data[pos:pos] = junk
    path = tmp_path_factory.getbasetemp() / "fuzz_config.yaml"
    path.write_bytes(bytes(data))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)
        return
    assert isinstance(cfg, RunConfig)
    assert not Path("pwned").exists()


def test_config_errors_name_the_key() -> None:
    """Targeted cases next to the fuzzing: the message names the dotted key."""
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"epochs": 0, "lrr": 1}, "data": {"n_per_domain": 5}}, source="c.yaml")
    text = str(info.value)
    for key in ("train.epochs", "train.lrr", "data.n_per_domain", "c.yaml"):
        assert key in text


# ============================================================================ image files


def _seed_files() -> dict[str, bytes]:
    """Small valid files in every supported format (the fuzzer mutates these)."""
    import cv2
    import nibabel as nib
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    out: dict[str, bytes] = {}
    for name, arr, ext in (("g8", g8, ".png"), ("g16", g16, ".png"), ("rgb", rgb, ".png"), ("rgba", rgba, ".png"),
                           ("jpg", rgb, ".jpg"), ("bmp", rgb, ".bmp"), ("tif", g16, ".tif")):
        ok, buf = cv2.imencode(ext, arr)
        assert ok
        out[name + ext] = buf.tobytes()

    def dicom(photometric: str, window: bool) -> bytes:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "DX"
        ds.Rows, ds.Columns = g16.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        if window:
            ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = (g16 >> 4).astype(np.uint16).tobytes()
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()

    out["m2.dcm"] = dicom("MONOCHROME2", False)
    out["m1w.dcm"] = dicom("MONOCHROME1", True)
    nii = nib.Nifti1Image(g16.T.astype(np.int16), np.eye(4))
    out["img.nii"] = nii.to_bytes()
    out["img.nii.gz"] = gzip.compress(nii.to_bytes(), mtime=0)
    return out


SEEDS = _seed_files()
SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", "", ".txt"]


def _suffix(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


@st.composite
def image_bytes(draw) -> tuple[bytes, str]:
    """A valid seed file with flipped / inserted / deleted bytes or truncation, or pure noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300)), draw(st.sampled_from(SUFFIXES))
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    # mostly the seed's own suffix; sometimes a lying one
    suffix = _suffix(name) if draw(st.integers(0, 4)) else draw(st.sampled_from(SUFFIXES))
    return bytes(data), suffix


def _check_read(path: Path) -> None:
    for channels in (None, 1, 3):
        try:
            img = read_image(path, channels=channels)
        except ImageReadError as exc:
            assert exc.path == str(path) and str(path) in str(exc), str(exc)
            break
        assert img.dtype == np.float32 and img.ndim == 3, (img.dtype, img.shape)
        assert img.shape[0] in (1, 3) and img.shape[1] > 0 and img.shape[2] > 0, img.shape
        if channels is not None:
            assert img.shape[0] == channels
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    try:
        mask = read_mask(path)
    except ImageReadError as exc:
        assert exc.path == str(path), str(exc)
        return
    assert mask.dtype == np.int64 and mask.ndim == 2 and (mask >= 0).all()


@fuzz_settings(1800)
@given(sample=image_bytes())
def test_fuzz_image_readers(tmp_path_factory, sample) -> None:
    data, suffix = sample
    path = tmp_path_factory.getbasetemp() / f"fuzz_image{suffix}"
    path.write_bytes(data)
    _check_read(path)


def test_seed_files_are_readable(tmp_path: Path) -> None:
    """The un-mutated seeds all read (so the fuzzer starts from valid files)."""
    for name, data in SEEDS.items():
        path = tmp_path / name
        path.write_bytes(data)
        img = read_image(path)
        assert img.shape[1:] == (6, 5), (name, img.shape)


def test_unreadable_paths_raise_shiftkit_errors(tmp_path: Path) -> None:
    """Paths that are not files: a folder, a missing file, a fifo, a name with a NUL byte."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path in (tmp_path, tmp_path / "missing.png", fifo, tmp_path / ("x" * 300 + ".png")):
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert str(path) in str(info.value)
    with pytest.raises(ShiftkitError):
        read_image(str(tmp_path / "a\x00b.png"))


