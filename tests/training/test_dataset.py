"""Discovery and labels: folder names, N/Y prefixes, labels.csv, real file names, counts."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from tests.images import create_random_slice, save_image
from training.dataset import DatasetError, discover, label_from_path


@pytest.mark.parametrize(
    "relpath,label",
    [
        ("seed-253/no/N (12).jpg", 0),
        ("seed-253/yes/Y (3).JPG", 1),
        ("kaggle/glioma/Tr-gl_0001.jpg", 1),
        ("kaggle/notumor/Tr-no_0001.jpg", 0),
        ("site/Normal/a.png", 0),
        ("site/TUMOUR/b.png", 1),
        ("flat/N (5).jpg", 0),
        ("flat/Y7.jpg", 1),
        ("flat/no 90.jpg", 0),
        ("flat/notes.jpg", None),
        ("flat/yellow.png", None),
        ("scans/patient1/slice.dcm", None),
    ],
)
def test_labels_from_paths(relpath: str, label: int | None) -> None:
    assert label_from_path(PurePosixPath(relpath))[0] == label


def test_labels_csv_overrides_and_other_files_are_skipped(tmp_path: Path) -> None:
    img = create_random_slice(64)
    save_image(tmp_path / "scans" / "a b (1).png", img)
    save_image(tmp_path / "scans" / "c.png", img)
    (tmp_path / "scans" / "report.pdf").write_bytes(b"%PDF")
    (tmp_path / "labels.csv").write_text("path,label\nscans/a b (1).png,tumour\nscans/c.png,0\n")
    found = discover([tmp_path])
    labels = {r.relpath: r.label for r in found.images}
    assert labels == {"scans/a b (1).png": 1, "scans/c.png": 0}
    assert found.skipped == ["scans/report.pdf"]


def test_labels_csv_may_name_each_images_subject(tmp_path: Path) -> None:
    """A subject column (or `group`, `patient`) in labels.csv: whose scan each image is, for splits."""
    img = create_random_slice(64)
    for name in ("yes/a.png", "no/b.png", "no/c.png"):
        save_image(tmp_path / "site" / name, img)
    (tmp_path / "site" / "labels.csv").write_text("path,patient,label\nyes/a.png,P1,yes\nno/b.png,P1,\n")
    found = {r.relpath: (r.label, r.subject) for r in discover([tmp_path / "site"]).images}
    assert found == {"yes/a.png": (1, "P1"), "no/b.png": (0, "P1"), "no/c.png": (0, "")}  # folder label kept
    (tmp_path / "site" / "labels.csv").write_text("yes/a.png,0,P2\n")  # no header: path, label, subject
    found = {r.relpath: (r.label, r.subject) for r in discover([tmp_path / "site"]).images}
    assert found["yes/a.png"] == (0, "P2") and found["no/b.png"] == (0, "")


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        discover([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images found"):
        discover([tmp_path / "empty"])


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    save_image(outside / "secret.png", create_random_slice(64))
    root = tmp_path / "root"
    save_image(root / "yes" / "Y1.png", create_random_slice(64))
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "yes" / "filelink.png").symlink_to(outside / "secret.png")
    assert [r.relpath for r in discover([root]).images] == ["yes/Y1.png"]


@pytest.mark.data
def test_every_shared_set_is_found_with_its_labels(shared_data: Path) -> None:
    found = discover([shared_data])
    counts = found.counts()
    assert counts["by_category"] == {
        "glioma": 1221,
        "meningioma": 1189,
        "notumor": 938,
        "pituitary": 1136,
        "no": 98 + 2429,
        "yes": 155 + 1373,
    }
    assert counts["by_label"] == {"positive": 3701 + 1373, "negative": 1036 + 2429}
    assert counts["by_source"] == {
        "data/kaggle-4class-train": 4484,
        "data/lgg-flair": 3802,
        "data/seed-253": 253,
    }
    assert "seed-253/no/N (12).jpg" in {r.relpath for r in found.images}


@pytest.mark.data
def test_the_suspect_label_list_names_no_tumour_images_of_the_data(shared_data: Path) -> None:
    """docs/suspect_labels.txt (the error analysis's labels in doubt) names 20 real 'no tumour' files."""
    listed = Path(__file__).resolve().parents[2] / "docs" / "suspect_labels.txt"
    lines = (line.strip() for line in listed.read_text().splitlines())
    names = {line for line in lines if line and not line.startswith("#")}
    found = {p.name: p.parent.name for p in shared_data.rglob("*") if p.name in names}
    assert len(names) == 20 and set(found) == names
    assert set(found.values()) == {"notumor", "no"}
