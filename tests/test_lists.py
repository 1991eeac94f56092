"""List readers: RTFM/XDVioDet feature lists, VadCLIP CSVs, plain name lists."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from vad.data import AnnotationError, class_from_name, is_normal_name, read_list, split_feature_name
from vad.data.lists import list_format


def _annotations_dir() -> Path:
    env = os.environ.get("VAD_ANNOTATIONS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "annotations"


ANN = _annotations_dir()
needs_real = pytest.mark.skipif(not (ANN / "README.md").is_file(), reason=f"annotation files not found at {ANN}")


def test_names():
    assert split_feature_name("/x/y/Abuse028_x264__5.npy") == ("Abuse028_x264", 5)
    assert split_feature_name("C:\\f\\01_0015_i3d.npy") == ("01_0015", None)
    assert split_feature_name("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6__0.npy") == \
        ("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6", 0)
    assert class_from_name("Abuse028_x264", "ucf_crime") == ("Abuse", ())
    assert class_from_name("RoadAccidents001_x264", "ucf_crime") == ("RoadAccidents", ())
    assert class_from_name("Normal_Videos_003_x264", "ucf_crime") == (None, ())
    assert class_from_name("v=x__#1_label_B4-0-0", "xd_violence") == ("B4", ("B4",))
    assert class_from_name("Bad.Boys.1995__#01_label_G-B2-B6", "xd_violence") == ("G", ("G", "B2", "B6"))
    assert is_normal_name("Normal_Videos_003_x264", "ucf_crime") is True
    assert is_normal_name("v=x__#1_label_A", "xd_violence") is True
    assert is_normal_name("01_001", "shanghaitech") is True and is_normal_name("01_0014", "shanghaitech") is False


@needs_real
def test_xd_rgb_test_list():
    path = ANN / "xd_violence" / "rgb_test.list"
    assert list_format(path) == "features"
    entries = read_list(path)
    assert len(entries) == 800 and {len(e.paths) for e in entries} == {5}
    assert sum(e.is_normal for e in entries) == 300 and sum(not e.is_normal for e in entries) == 500
    first = entries[0]
    assert first.video_id == "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"
    assert [p.name for p in first.paths] == [f"{first.video_id}__{k}.npy" for k in range(5)]
    assert first.cls == "G" and first.codes == ("G", "B2", "B6") and first.label == "anomalous"
    assert all(e.cls is None and e.codes == ("A",) for e in entries if e.is_normal)
    # re-anchor the author's absolute paths under a local folder
    local = read_list(path, root="/data/xd/test")
    assert local[0].paths[3] == Path("/data/xd/test") / f"{first.video_id}__3.npy"


@needs_real
def test_plain_name_lists():
    sh = read_list(ANN / "shanghaitech" / "SH_Test.txt")
    assert list_format(ANN / "shanghaitech" / "SH_Test.txt") == "names"
    assert len(sh) == 199 and sum(not e.is_normal for e in sh) == 44
    train = read_list(ANN / "ucf_crime" / "Anomaly_Train.txt")
    assert len(train) == 1610 and sum(e.is_normal for e in train) == 800
    assert train[0].video_id == "Abuse001_x264" and train[0].cls == "Abuse"
    assert train[0].paths == [Path("Abuse/Abuse001_x264.mp4")]
    kept = read_list(ANN / "ucf_crime" / "Anomaly_Train.txt", root="/videos", keep_parents=1)
    assert kept[0].paths == [Path("/videos/Abuse/Abuse001_x264.mp4")]
    # a "name N ..." file read as a list: the first column only
    test = read_list(ANN / "ucf_crime" / "Test_Annotation.txt")
    assert len(test) == 290 and sum(e.is_normal for e in test) == 150


def test_vadclip_csv(tmp_path):
    # Layout of VadCLIP's list/*.csv: header "path,label"; UCF labels are class names
    # ("Normal"), XD labels the code string ("A", "B2-0-0"); train lists one line per crop.
    ucf = tmp_path / "ucf_CLIP_rgbtest.csv"
    ucf.write_text(
        "path,label\n"
        "/home/u/UCFClipFeatures/Abuse/Abuse028_x264__5.npy,Abuse\n"
        "/home/u/UCFClipFeatures/Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264__5.npy,Normal\n"
    )
    entries = read_list(ucf, root="/feat", keep_parents=1)
    assert [(e.video_id, e.label, e.cls) for e in entries] == [
        ("Abuse028_x264", "anomalous", "Abuse"), ("Normal_Videos_003_x264", "normal", None)]
    assert entries[0].paths == [Path("/feat/Abuse/Abuse028_x264__5.npy")]
    xd = tmp_path / "xd_CLIP_rgb.csv"
    lines = ["path,label"]
    lines += [f"/h/XDTrain/Bad.Boys.1995__#00-26-51_00-27-53_label_B2-0-0__{k}.npy,B2-0-0" for k in range(10)]
    lines += [f"/h/XDTrain/v=abc__#1_label_A__{k}.npy,A" for k in range(10)]
    xd.write_text("\n".join(lines) + "\n")
    assert list_format(xd) == "csv"
    entries = read_list(xd)
    assert len(entries) == 2 and [len(e.paths) for e in entries] == [10, 10]
    assert (entries[0].cls, entries[0].codes, entries[1].label) == ("B2", ("B2",), "normal")


def test_crop_grouping_and_errors(tmp_path, caplog):
    lst = tmp_path / "x.list"
    lst.write_text("a/01_0014__0.npy\na/01_0014__1.npy\na/01_001__0.npy\na/01_0014__2.npy\n")
    with caplog.at_level(logging.WARNING, logger="vad.data.lists"):
        entries = read_list(lst)
    assert [e.video_id for e in entries] == ["01_0014", "01_001"]
    assert [p.name for p in entries[0].paths] == ["01_0014__0.npy", "01_0014__1.npy", "01_0014__2.npy"]
    assert "non-consecutive" in caplog.text
    assert [e.label for e in entries] == ["anomalous", "normal"]
    # given GT wins over names
    gt = {"01_0014": np.zeros(5, np.uint8), "01_001": np.array([0, 1], np.uint8)}
    assert [e.label for e in read_list(lst, gt=gt)] == ["normal", "anomalous"]
    unknown = tmp_path / "u.txt"
    unknown.write_text("clip1\nclip2\n")
    with pytest.raises(AnnotationError, match="cannot tell"):
        read_list(unknown)
    assert [e.label for e in read_list(unknown, known_normal={"clip1": True, "clip2": False})] == \
        ["normal", "anomalous"]
    with pytest.raises(FileNotFoundError):
        read_list(tmp_path / "missing.list")
