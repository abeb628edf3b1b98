"""Adapters: tiny fixture trees in each dataset's real on-disk layout, read back through manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dsfixtures import SECRET_BIRTH, SECRET_ID, SECRET_NAME, write_dicom_file, write_png_file

from shiftkit.datasets import DataError, ManifestDataset, load_manifest, read_mask
from shiftkit.datasets.adapters import (
    LABELID_TO_TRAINID,
    bdd100k,
    chexpert,
    cityscapes,
    mimic,
    nih,
)


def _jpg(path, value=128, shape=(6, 8)):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _no_identifiers(manifest_path):
    text = manifest_path.read_text()
    for secret in (SECRET_NAME, SECRET_ID, SECRET_BIRTH, "Patient ID", "subject_id", "study_id", "dicom_id"):
        assert secret not in text, secret


# ---------------------------------------------------------------------------------------------
# CheXpert


@pytest.fixture
def chexpert_root(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    obs = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
           "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
           "Fracture", "Support Devices"]
    rows = [  # (patient, Sex, Age, view, AP/PA, {column: value})
        ("patient00001", "Female", 68, "Frontal", "AP", {"Edema": "1.0"}),
        ("patient00002", "Male", 87, "Frontal", "PA", {"Pleural Effusion": "-1.0"}),
        ("patient00003", "Male", 41, "Lateral", "", {"No Finding": "1.0"}),
        ("patient00004", "Unknown", 55, "Frontal", "PA", {}),
    ]
    recs = []
    for pid, sex, age, view, appa, vals in rows:
        rel = f"CheXpert-v1.0-small/train/{pid}/study1/view1_{view.lower()}.jpg"
        _jpg(tmp_path / rel)
        rec = {"Path": rel, "Sex": sex, "Age": age, "Frontal/Lateral": view, "AP/PA": appa}
        rec.update({o: vals.get(o, "") for o in obs})
        recs.append(rec)
    root.mkdir(exist_ok=True)
    pd.DataFrame(recs).to_csv(root / "train.csv", index=False)
    valid = dict(recs[0], Path="CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
    _jpg(tmp_path / valid["Path"])
    pd.DataFrame([valid]).to_csv(root / "valid.csv", index=False)
    return root


@pytest.mark.parametrize("policy,expected", [("ones", [1, 1, 0, 0]), ("zeros", [1, 0, 0, 0]), ("ignore", [1, 0, 0])])
def test_chexpert_uncertain_policies(chexpert_root, policy, expected):
    m = chexpert(chexpert_root, uncertain=policy)
    f = load_manifest(m)
    train = f[f["split"] == "train"]
    assert train["label"].tolist() == expected
    assert train["sex"].fillna("").tolist()[:2] == ["F", "M"]
    assert (f["split"] == "val").sum() == 1
    _no_identifiers(m)


def test_chexpert_single_target_and_dataset(chexpert_root):
    f = load_manifest(chexpert(chexpert_root, target="Pleural Effusion", uncertain="ones", frontal_only=True))
    assert f[f["split"] == "train"]["label"].tolist() == [0, 1, 0]
    item = ManifestDataset(f)[0]
    assert item["image"].shape == (1, 6, 8) and item["view"] == "Frontal"
    with pytest.raises(DataError, match="uncertain='maybe'"):
        chexpert(chexpert_root, uncertain="maybe")


# ---------------------------------------------------------------------------------------------
# NIH ChestX-ray14


def test_nih_layout(tmp_path):
    root = tmp_path / "nih"
    entries = [("00000001_000.png", "Cardiomegaly|Emphysema", "1", "58", "M", "PA"),
               ("00000002_000.png", "No Finding", "2", "81", "F", "AP"),
               ("00000003_001.png", "Nodule", "3", "33", "F", "PA"),
               ("00000004_000.png", "No Finding", "4", "60", "M", "PA")]  # not on disk: skipped
    for name, *_ in entries[:2]:
        write_png_file(root / "images_001" / "images" / name, np.zeros((5, 7), np.uint8))
    write_png_file(root / "images_002" / "images" / entries[2][0], np.zeros((5, 7), np.uint8))
    pd.DataFrame([{"Image Index": n, "Finding Labels": fl, "Follow-up #": 0, "Patient ID": SECRET_ID + pid,
                   "Patient Age": age, "Patient Gender": sex, "View Position": view,
                   "OriginalImage[Width": 1024, "Height]": 1024}
                  for n, fl, pid, age, sex, view in entries]).to_csv(root / "Data_Entry_2017.csv", index=False)
    (root / "test_list.txt").write_text("00000003_001.png\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000002_000.png\n")
    m = nih(root)
    f = load_manifest(m)
    assert f["label"].tolist() == [1, 0, 1]
    assert f["split"].tolist() == ["train", "train", "test"]
    assert f["sex"].tolist() == ["M", "F", "F"] and f["age"].tolist() == [58, 81, 33]
    assert load_manifest(nih(root, target="Nodule"))["label"].tolist() == [0, 0, 1]
    _no_identifiers(m)


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR(-JPG), including the DICOM release


def _mimic_tree(root, suffix):
    meta, lab, split = [], [], []
    for k, (subj, study, view, edema, sp) in enumerate([("10000032", "50414267", "PA", "1.0", "train"),
                                                         ("10000032", "50414267", "LATERAL", "1.0", "train"),
                                                         ("10000898", "50771383", "AP", "-1.0", "validate"),
                                                         ("10001122", "53447138", "PA", "", "test")]):
        dicom_id = f"d{k:03d}abc"
        p = root / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{dicom_id}{suffix}"
        if suffix == ".jpg":
            _jpg(p)
        else:
            write_dicom_file(p, np.full((6, 8), 1000 * (k + 1), np.uint16), extra={"ViewPosition": view})
        meta.append({"dicom_id": dicom_id, "subject_id": subj, "study_id": study, "ViewPosition": view,
                     "Rows": 6, "Columns": 8, "StudyDate": "21800506"})
        split.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subj, "split": sp})
        lab.append({"subject_id": subj, "study_id": study, "Edema": edema})
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(lab).drop_duplicates().to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    pd.DataFrame([{"subject_id": "10000032", "gender": "F", "anchor_age": "52", "anchor_year": "2180",
                   "dod": ""}, {"subject_id": "10000898", "gender": "M", "anchor_age": "77", "anchor_year": "2160",
                                "dod": ""}]).to_csv(root / "patients.csv", index=False)


@pytest.mark.parametrize("suffix", [".jpg", ".dcm"])
def test_mimic_layout_and_no_identifiers(tmp_path, suffix):
    root = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    root.mkdir(parents=True)
    _mimic_tree(root, suffix)
    m = mimic(root, target="Edema", uncertain="zeros", patients_csv=root / "patients.csv", suffix=suffix)
    f = load_manifest(m)
    assert f["label"].tolist() == [1, 0, 0]  # lateral dropped; uncertain -> 0; blank -> 0
    assert f["split"].tolist() == ["train", "val", "test"]
    assert f["view"].tolist() == ["PA", "AP", "PA"]
    assert f["sex"].fillna("").tolist() == ["F", "M", ""]
    _no_identifiers(m)
    # reading the DICOMs through the dataset leaks no identity into items either
    ds = ManifestDataset(f)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, 6, 8)
        assert not any(SECRET_NAME in str(v) or SECRET_ID in str(v) or SECRET_BIRTH in str(v)
                       for v in item.values())


# ---------------------------------------------------------------------------------------------
# BDD100K


def _bdd_tree(root):
    names = {"b1d0a191-03dcecc2": ("city street", "daytime", "clear"),
             "b1c9c847-3bda4659": ("highway", "night", "rainy"),
             "c3a4b5d6-00000001": ("residential", "dawn/dusk", "foggy")}
    recs = {"train": [], "val": []}
    for k, (stem, (scene, tod, weather)) in enumerate(names.items()):
        split = "train" if k < 2 else "val"
        _jpg(root / "images" / "100k" / split / f"{stem}.jpg")
        _jpg(root / "images" / "10k" / split / f"{stem}.jpg")
        trainid = np.array([[0, 0, 1, 8], [10, 13, 11, 255]], np.uint8)
        write_png_file(root / "labels" / "sem_seg" / "masks" / split / f"{stem}.png",
                       np.kron(trainid, np.ones((3, 2), np.uint8)))
        recs[split].append({"name": f"{stem}.jpg", "attributes": {"weather": weather, "scene": scene,
                                                                  "timeofday": tod},
                            "timestamp": 10000, "labels": [{"category": "car", "box2d": {}}]})
    for split, r in recs.items():
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"bdd100k_labels_images_{split}.json").write_text(json.dumps(r))


def test_bdd100k_attributes_domains_and_masks(tmp_path):
    root = tmp_path / "bdd100k"
    _bdd_tree(root)
    f = load_manifest(bdd100k(root))
    assert sorted(f["domain"]) == ["city_street", "highway", "residential"]
    assert set(f["timeofday"]) == {"daytime", "night", "dawn/dusk"} and "rainy" in set(f["weather"])
    seg = load_manifest(bdd100k(root, segmentation=True, domain_by=("scene", "timeofday"), out=root / "seg.csv"))
    assert "highway_night" in set(seg["domain"])
    m = read_mask(seg["mask"][0])
    assert m.shape == (6, 8) and m[0, 0] == 0 and m[-1, -1] == 255
    sk = load_manifest(bdd100k(root, segmentation=True, classes="shiftkit", out=root / "sk.csv"))
    m = read_mask(sk["mask"][0])
    # trainIds road 0, sidewalk 1, vegetation 8, sky 10, car 13, person 11 -> shiftkit 0, 2, 4, 6, 7, 8
    assert [m[0, 0], m[0, 4], m[0, 6], m[3, 0], m[3, 2], m[3, 4]] == [0, 2, 4, 6, 7, 8]
    item = ManifestDataset(sk)[0]
    assert item["image"].shape == (1, 6, 8) and item["mask"].shape == (6, 8)
    with pytest.raises(DataError, match="domain_by"):
        bdd100k(root, domain_by="city")


# ---------------------------------------------------------------------------------------------
# Cityscapes


def test_cityscapes_labelids_to_trainids(tmp_path):
    root = tmp_path / "cityscapes"
    label_ids = np.array([[7, 8, 11, 21], [23, 24, 26, 0]], np.uint8)  # road sidewalk building veg / sky person car unlabeled
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        write_png_file(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                       np.zeros((2, 4, 3), np.uint8))
        write_png_file(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    f = load_manifest(cityscapes(root, progress=False))
    assert f["city"].tolist() == ["aachen", "frankfurt"] and f["split"].tolist() == ["train", "val"]
    m = read_mask(f["mask"][0])
    np.testing.assert_array_equal(m, [[0, 1, 2, 8], [10, 11, 13, 255]])
    np.testing.assert_array_equal(m, LABELID_TO_TRAINID[label_ids])
    sk = load_manifest(cityscapes(root, classes="shiftkit", out=root / "sk.csv", progress=False))
    np.testing.assert_array_equal(read_mask(sk["mask"][0]), [[0, 2, 3, 4], [6, 8, 7, 255]])
    assert ManifestDataset(sk)[0]["image"].shape == (3, 2, 4)
    with pytest.raises(DataError, match="Cityscapes leftImg8bit"):
        cityscapes(tmp_path / "empty", progress=False)
