"""Manifest loading and validation: every problem at once, with row numbers and paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftkit.datasets import DataError, ManifestError, ShiftkitError, load_manifest


def _tree(tmp_path, write_png, names=("a.png", "b.png", "c.png")):
    for n in names:
        write_png(tmp_path / n, np.zeros((4, 6), np.uint8))
    return tmp_path


def _csv(path, text):
    path.write_text(text)
    return path


def test_good_manifest_round_trip(tmp_path, write_png):
    _tree(tmp_path, write_png)
    m = _csv(tmp_path / "m.csv", "image,label,mask,domain,split,sex,age,site\n"
                                 "a.png,1,b.png,city,train,F,63,NA\n"
                                 "c.png,,,rural,TEST,M,41,x\n")
    f = load_manifest(m)
    assert list(f.columns) == ["image", "label", "mask", "domain", "split", "sex", "age", "site"]
    assert f["image"].tolist() == [str((tmp_path / "a.png").resolve()), str((tmp_path / "c.png").resolve())]
    assert f["label"].tolist() == [1, -1] and f["label"].dtype == np.int64
    assert f["mask"].tolist()[0] == str((tmp_path / "b.png").resolve()) and pd.isna(f["mask"].tolist()[1])
    assert f["split"].tolist() == ["train", "test"]
    assert f["age"].dtype == np.int64 and f["age"].tolist() == [63, 41]
    assert f["site"].tolist() == ["NA", "x"]  # the text "NA" is a site, not a missing value


def test_every_problem_reported_at_once(tmp_path, write_png):
    _tree(tmp_path, write_png)
    m = _csv(tmp_path / "m.csv", "image,label,mask,domain,split\n"
                                 "a.png,0,,city,train\n"          # row 1 fine
                                 "missing.png,0,,city,train\n"    # row 2 missing file
                                 "b.png,7,,city,validation\n"     # row 3 unknown split
                                 "c.png,-3,nomask.png,city,val\n"  # row 4 label out of range, mask missing
                                 "a.png,0,,city,train\n"          # row 5 duplicate of 1
                                 ",1,,,test\n"                    # row 6 empty image and domain
                                 "b.png,x,,rural,test\n")         # row 7 label not a number
    with pytest.raises(ManifestError) as info:
        load_manifest(m, num_classes=2)
    probs = info.value.problems
    text = "\n".join(probs)
    assert "row 2: image file not found" in text and "missing.png" in text
    assert "row 3: unknown split 'validation'" in text
    assert "row 3: label '7' out of range" in text
    assert "row 4: label '-3' out of range" in text
    assert "row 4: mask file not found" in text and "nomask.png" in text
    assert "row 5: duplicate of row 1" in text
    assert "row 6: empty image path" in text and "row 6: empty domain" in text
    assert "row 7: label 'x' is not a number" in text
    assert "row 7: duplicate of row 3" in text
    assert len(probs) == 10
    rows = [int(p.split(':')[0].split()[1]) for p in probs]
    assert rows == sorted(rows)  # reported in row order
    assert str(m) in str(info.value)


def test_paths_escaping_root_rejected_unless_allowed(tmp_path, write_png):
    outside = write_png(tmp_path / "outside.png", np.zeros((3, 3), np.uint8))
    sub = tmp_path / "data"
    _tree(sub, write_png, ("in.png",))
    m = _csv(sub / "m.csv", f"image,domain\nin.png,a\n../outside.png,a\n{outside},a\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    escapes = [p.split(":")[0] for p in info.value.problems if "escapes the manifest folder" in p]
    assert escapes == ["row 2", "row 3"]
    m = _csv(sub / "m.csv", "image,domain\nin.png,a\n../outside.png,a\n")
    f = load_manifest(m, allow_outside_root=True)
    assert f["image"].tolist()[1] == str(outside.resolve())


def test_symlink_out_of_root_is_an_escape(tmp_path, write_png):
    target = write_png(tmp_path / "secret.png", np.zeros((3, 3), np.uint8))
    sub = tmp_path / "data"
    sub.mkdir()
    (sub / "link.png").symlink_to(target)
    m = _csv(sub / "m.csv", "image,domain\nlink.png,a\n")
    with pytest.raises(ManifestError, match="escapes"):
        load_manifest(m)


def test_missing_columns_and_empty(tmp_path):
    with pytest.raises(ManifestError, match="missing required column 'domain'"):
        load_manifest(_csv(tmp_path / "m.csv", "image,label\na.png,1\n"))
    with pytest.raises(ManifestError, match="no rows"):
        load_manifest(_csv(tmp_path / "e.csv", "image,domain\n"))
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "none.csv")
    with pytest.raises(ManifestError, match="unsupported manifest type"):
        load_manifest(_csv(tmp_path / "m.xlsx", "x"))


def test_check_files_false_and_root(tmp_path):
    m = _csv(tmp_path / "m.csv", "image,domain\nimgs/a.png,a\n")
    f = load_manifest(m, check_files=False)
    assert f["image"][0] == str((tmp_path / "imgs" / "a.png").resolve())
    f = load_manifest(m, check_files=False, root=tmp_path / "elsewhere")
    assert f["image"][0] == str((tmp_path / "elsewhere" / "imgs" / "a.png").resolve())


def test_parquet(tmp_path, write_png):
    pytest.importorskip("pyarrow")
    _tree(tmp_path, write_png)
    pd.DataFrame({"image": ["a.png"], "domain": ["x"], "label": [1]}).to_parquet(tmp_path / "m.parquet")
    assert load_manifest(tmp_path / "m.parquet")["label"].tolist() == [1]


_cell = st.one_of(st.text(max_size=8), st.sampled_from(["a.png", "../a.png", "/etc/passwd", "", "1", "-1",
                                                        "0.5", "nan", "train", "TEST", "1e309"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(st.sampled_from(["image", "label", "mask", "domain", "split", "sex", "age", "x"]),
                    min_size=0, max_size=7),
    rows=st.lists(st.lists(_cell, min_size=0, max_size=8), max_size=6),
    raw=st.binary(max_size=40),
    use_raw=st.booleans(),
)
def test_fuzz_load_manifest_only_raises_shiftkit_errors(tmp_path, header, rows, raw, use_raw):
    """Whatever the table holds, load_manifest returns a frame or raises a shiftkit error."""
    (tmp_path / "a.png").write_bytes(b"x")
    p = tmp_path / "m.csv"
    if use_raw:
        p.write_bytes(raw)
    else:
        def q(c: str) -> str:
            return '"' + c.replace('"', '""') + '"'

        lines = [",".join(q(h) for h in header)] + [",".join(q(c) for c in r) for r in rows]
        p.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        f = load_manifest(p)
    except ShiftkitError as exc:
        assert isinstance(exc, DataError)
        return
    assert {"image", "domain"} <= set(f.columns) and len(f) > 0
