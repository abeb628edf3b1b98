"""Patient identifiers never leave the input files.

DICOMs carrying PatientName, PatientID and PatientBirthDate (and sitting in folders named by
the patient ID, as MIMIC-CXR and CheXpert lay theirs out) go through a manifest, training
(`shiftkit run` with a manifest config, as a user runs it) and the report. Then every file
the run wrote, and everything it printed to stdout and stderr, is searched byte by byte for
each identifier in several spellings. A positive control proves the search can see them.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

# Distinctive values: they cannot turn up by chance inside floats, base64 or weights.
PATIENTS = [
    {"PatientName": f"Zyxwarbleton^Quintessa{i}", "PatientID": f"PIDQX{7731946 + i * 7919}",
     "PatientBirthDate": f"1947{(i % 12) + 1:02d}{(i % 27) + 1:02d}"}
    for i in range(8)
]


def needles() -> list[bytes]:
    """Every spelling of every identifier worth searching for."""
    out: set[str] = set()
    for p in PATIENTS:
        family, given = p["PatientName"].split("^")
        out |= {p["PatientName"], family, given, f"{given} {family}", f"{family}, {given}", p["PatientID"]}
        d = p["PatientBirthDate"]
        out |= {d, f"{d[:4]}-{d[4:6]}-{d[6:]}", f"{d[6:]}/{d[4:6]}/{d[:4]}", f"{d[4:6]}/{d[6:]}/{d[:4]}"}
    return sorted((s.encode() for s in out), key=len, reverse=True)


def _write_dicom(path: Path, pixels: np.ndarray, patient: dict) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient["PatientName"]
    ds.PatientID = patient["PatientID"]
    ds.PatientBirthDate = patient["PatientBirthDate"]
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def build_dicom_manifest(root: Path, n_per_domain: int = 30, size: int = 32) -> Path:
    """Radiographs from the embedded generator, stored as identified DICOMs + a manifest."""
    from shiftkit.datasets.synth import radiograph

    rows = []
    k = 0
    for domain, site in (("city", "siteA"), ("rural", "siteB")):
        for i in range(n_per_domain):
            s = radiograph.sample(domain, i, seed=0, size=size)
            patient = PATIENTS[k % len(PATIENTS)]
            rel = f"{patient['PatientID']}/study{i:03d}/view1.dcm"
            pixels = np.clip(np.asarray(s["image"])[0] * 4095.0, 0, 4095)
            _write_dicom(root / rel, pixels, patient)
            split = "train" if i < 0.6 * n_per_domain else ("val" if i < 0.8 * n_per_domain else "test")
            rows.append({"image": rel, "label": int(s["label"]), "domain": site, "split": split,
                         "sex": s["sex"], "age": int(s["age"])})
            k += 1
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def find_leaks(blobs: dict[str, bytes]) -> list[str]:
    found = []
    for where, data in blobs.items():
        low = data.lower()
        for needle in needles():
            if needle.lower() in low:
                found.append(f"{where}: {needle.decode()}")
    return found


def test_the_search_sees_identifiers_in_the_inputs(tmp_path: Path) -> None:
    """Positive control: the same search finds every identifier in the DICOMs and the manifest."""
    manifest = build_dicom_manifest(tmp_path, n_per_domain=2)
    dicom = next(tmp_path.rglob("*.dcm")).read_bytes()
    leaks = find_leaks({"dcm": dicom, "manifest": manifest.read_bytes()})
    assert any(x.startswith("dcm: Zyxwarbleton") for x in leaks), leaks
    assert any("PIDQX" in x for x in leaks if x.startswith("dcm")) and any("1947" in x for x in leaks)
    assert any(x.startswith("manifest: PIDQX") for x in leaks)


@pytest.mark.slow
def test_no_identifier_reaches_outputs_or_logs(tmp_path: Path) -> None:
    data = tmp_path / "hospital"
    manifest = build_dicom_manifest(data)
    runs = tmp_path / "runs"
    config = {
        "name": "privacy",
        "out_dir": str(runs),
        "methods": ["source_only", "dann"],
        "progress": True,  # progress bars go to stderr too: they are searched as well
        "data": {"benchmark": None, "manifest": str(manifest), "source_domain": "siteA",
                 "target_domain": "siteB"},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu"},
        "dann": {"disc_hidden": [32, 32]},
        "evaluation": {"n_permutations": 50},
    }
    cfg_path = tmp_path / "privacy.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).parent / "shiftkit"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "shiftkit.adapt.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}
    proc = subprocess.run([*cmd, "run", str(cfg_path)], capture_output=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-4000:]

    outputs = {str(p.relative_to(runs)): p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    # the run really trained on the DICOMs and wrote its report (the search is not vacuous)
    assert "privacy/metrics.json" in outputs and "privacy/report.html" in outputs
    assert any(k.endswith(".pt") for k in outputs), sorted(outputs)
    import json

    metrics = json.loads(outputs["privacy/metrics.json"])
    assert metrics["run"]["split_sizes"]["source_train"] == 18
    assert len(proc.stderr) > 0

    blobs = dict(outputs)
    blobs["stdout"] = proc.stdout
    blobs["stderr"] = proc.stderr
    leaks = find_leaks(blobs)
    assert not leaks, "patient identifiers leaked:\n" + "\n".join(leaks[:20])
