"""Segmentation datasets on tiny MSD / NIfTI folders written here: partial annotation from dataset.json and
annotated.csv, one DataError naming the case per bad input, normalisation, resampling, patches; and two real
MSD Hippocampus cases when the shared data is there."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtransfer.data.volumes import (
    Volume,
    foreground_patches,
    load_msd,
    load_nifti_folder,
    normalize_intensity,
    read_case,
)
from medtransfer.errors import DataError

SHAPE = (10, 12, 9)
LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}
IDS = ["case_001", "case_002", "case_003"]


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def _case_arrays(seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 20.0, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[2:5, 2:6, 2:5] = 1
    label[6:9, 5:10, 4:8] = 2
    return image, label


def write_msd(root: Path, modality: dict | None = None, annotated: dict | None = None, affine=None) -> Path:
    """An MSD folder with three 10×12×9 cases labelled 1 (Anterior) and 2 (Posterior)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, cid in enumerate(IDS):
        image, label = _case_arrays(i)
        _save(root / "imagesTr" / f"{cid}.nii.gz", image, affine)
        _save(root / "labelsTr" / f"{cid}.nii.gz", label, affine)
        entry = {"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"}
        if annotated and cid in annotated:
            entry["annotated"] = annotated[cid]
        training.append(entry)
    meta = {"name": "Tiny", "labels": LABELS, "modality": modality or {"0": "MRI"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def msd(tmp_path: Path) -> Path:
    return write_msd(tmp_path / "msd")


# --------------------------------------------------------------------------- loading and annotation
def test_load_msd_lists_cases_lazily_with_all_classes_annotated(msd: Path) -> None:
    ds = load_msd(msd / "dataset.json")
    assert ds.name == "Tiny" and ds.modality == "MRI" and ds.root == msd
    assert ds.class_names == ["background", "Anterior", "Posterior"] and ds.n_classes == 3
    assert [c.id for c in ds.cases] == IDS
    assert all(c.annotated == ("Anterior", "Posterior") for c in ds.cases)
    vol = read_case(ds, "case_001")
    assert vol.image.shape == (1, *SHAPE) and vol.image.dtype == np.float32
    assert vol.label.shape == SHAPE and vol.label.dtype == np.int64
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.annotated == (0, 1, 2)
    np.testing.assert_array_equal(vol.label, _case_arrays(0)[1])


def test_annotated_from_json_and_csv(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "msd", annotated={"case_001": ["Anterior"]})
    (root / "annotated.csv").write_text("case,annotated\ncase_002,background;Posterior\ncase_001,Anterior\n")
    ds = load_msd(root)
    assert [c.annotated for c in ds.cases] == [("Anterior",), ("Posterior",), ("Anterior", "Posterior")]
    vol = read_case(ds, "case_001")
    assert vol.annotated == (0, 1)
    # Voxels of the class this case does not annotate are unknown, so they are read as 0.
    full = _case_arrays(0)[1]
    np.testing.assert_array_equal(vol.label, np.where(full == 1, 1, 0))
    assert read_case(ds, "case_002").annotated == (0, 2)


def test_with_annotated_simulates_a_sparse_source(msd: Path) -> None:
    ds = load_msd(msd)
    sparse = ds.with_annotated({"case_003": ["Posterior"]})
    assert sparse.case("case_003").annotated == ("Posterior",) and ds.case("case_003").annotated != ("Posterior",)
    assert set(np.unique(read_case(sparse, "case_003").label)) == {0, 2}
    assert [c.id for c in ds.subset(["case_003", "case_001"]).cases] == ["case_003", "case_001"]


@pytest.mark.parametrize(
    "json_annotated, csv_text, match",
    [
        ({"case_002": ["Anterior", "Hipocampus"]}, None, "case 'case_002': unknown class 'Hipocampus'"),
        (None, "case,annotated\ncase_003,Posterior;Lateral\n", "case 'case_003': unknown class 'Lateral'"),
        (None, "case,annotated\ncase_009,Posterior\n", "case 'case_009'"),
        ({"case_001": ["Anterior"]}, "case,annotated\ncase_001,Posterior\n", "case 'case_001': annotated is"),
        (None, "id,classes\ncase_001,Posterior\n", "needs the columns 'case,annotated'"),
    ],
)
def test_bad_annotation_is_a_data_error_naming_the_case(tmp_path: Path, json_annotated, csv_text, match) -> None:
    root = write_msd(tmp_path / "msd", annotated=json_annotated)
    if csv_text:
        (root / "annotated.csv").write_text(csv_text)
    with pytest.raises(DataError, match=match):
        load_msd(root)


def test_missing_dataset_json_or_file(tmp_path: Path, msd: Path) -> None:
    with pytest.raises(DataError, match="no dataset.json"):
        load_msd(tmp_path)
    (msd / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'case_002': label file not found"):
        load_msd(msd)


# --------------------------------------------------------------------------- validation on read
def _overwrite(msd: Path, kind: str, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    folder = "imagesTr" if kind == "image" else "labelsTr"
    _save(msd / folder / "case_002.nii.gz", array, affine)


def _shifted() -> np.ndarray:
    affine = np.eye(4)
    affine[0, 3] = 0.5
    return affine


@pytest.mark.parametrize(
    "kind, array, affine, match",
    [
        ("label", np.ones((10, 12, 8), np.uint8), None, "shape .* and label shape .* differ"),
        ("label", _case_arrays(1)[1], _shifted(), "affines differ by 0.5 mm"),
        ("label", _case_arrays(1)[1] * 2, None, r"label values \[4\] outside the classes 0..2"),
        ("label", np.zeros(SHAPE, np.uint8), None, "no voxel of any annotated class"),
        ("label", _case_arrays(1)[1] + np.float32(0.5), None, "non-integer values"),
        ("image", np.zeros((10, 12), np.float32), None, "must be 3-D .* got shape \\(10, 12\\)"),
        ("image", np.full(SHAPE, np.nan, np.float32), None, "NaN or infinite"),
        ("image", np.zeros((*SHAPE, 2), np.float32), None, "2 channels, the dataset declares \\['MRI'\\]"),
    ],
    ids=["shape", "affine", "values", "empty", "float", "2d", "nan", "channels"],
)
def test_bad_volume_is_a_data_error_naming_the_case(msd: Path, kind, array, affine, match) -> None:
    _overwrite(msd, kind, array, affine)
    ds = load_msd(msd)
    read_case(ds, "case_001")  # the other cases are fine
    with pytest.raises(DataError, match=f"case 'case_002': .*{match}"):
        read_case(ds, "case_002")


def test_empty_in_the_annotated_classes_only(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "msd", annotated={"case_002": ["Anterior"]})
    label = _case_arrays(1)[1]
    _save(root / "labelsTr" / "case_002.nii.gz", np.where(label == 1, 0, label).astype(np.uint8))
    with pytest.raises(
        DataError, match=r"case 'case_002': the label has no voxel of any annotated class \['Anterior'\]"
    ):
        read_case(load_msd(root), "case_002")


def test_unreadable_file(msd: Path) -> None:
    (msd / "imagesTr" / "case_003.nii.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(DataError, match="case 'case_003': cannot read image file"):
        read_case(load_msd(msd), "case_003")


# --------------------------------------------------------------------------- intensities and resampling
def test_mri_z_score_over_nonzero_voxels(msd: Path) -> None:
    image, label = _case_arrays(0)
    image[:2] = 0.0  # zero background outside the anatomy
    _save(msd / "imagesTr" / "case_001.nii.gz", image)
    vol = read_case(load_msd(msd), "case_001")
    inside = vol.image[0][image != 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    assert np.allclose(vol.image[0][:2], -image[2:].mean() / image[2:].std(), rtol=1e-4)


def test_ct_window_and_multichannel(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "msd", modality={"0": "CT", "1": "T2"})
    hu = np.linspace(-2000, 2000, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    _save(root / "imagesTr" / "case_001.nii.gz", np.stack([hu, _case_arrays(0)[0]], axis=-1))
    ds = load_msd(root)
    assert ds.channels == ("CT", "T2") and ds.modality == "multi"
    vol = read_case(ds, "case_001")
    assert vol.image.shape == (2, *SHAPE)
    np.testing.assert_allclose(vol.image[0], (np.clip(hu, -1000, 1000) + 1000) / 2000, atol=1e-6)
    assert abs(vol.image[1].mean()) < 1e-5
    narrow = read_case(ds, "case_001", ct_window=(-500, 400)).image[0]
    assert narrow.min() == 0.0 and narrow.max() == 1.0
    np.testing.assert_allclose(normalize_intensity(hu[None], ["CT"], (-500, 400))[0], narrow)


def test_resampling_is_spacing_aware(tmp_path: Path) -> None:
    affine = np.diag([0.8, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 30.0]
    ds = load_msd(write_msd(tmp_path / "msd", affine=affine))
    native = read_case(ds, "case_001")
    assert native.spacing == pytest.approx((0.8, 1.0, 2.0))
    vol = read_case(ds, "case_001", spacing=(1.0, 1.0, 1.0))
    assert vol.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert vol.image.shape[1:] == vol.label.shape
    assert vol.label.shape == (8, 12, 17)  # 10×0.8, 12×1, 9×2 mm (the last voxel centre stays inside)
    np.testing.assert_allclose(vol.affine[:3, 3], affine[:3, 3])
    assert set(np.unique(vol.label)) == {0, 1, 2}
    # Nearest-neighbour labels keep each structure's volume in mm³ roughly.
    for c in (1, 2):
        before = (native.label == c).sum() * 0.8 * 2.0
        assert abs((vol.label == c).sum() - before) / before < 0.35


def test_nifti_folder(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, cid in enumerate(["a", "b"]):
        image, label = _case_arrays(i)
        _save(root / "images" / f"{cid}.nii.gz", image * 10 - 1000)
        _save(root / "labels" / f"{cid}.nii.gz", label)
    ds = load_nifti_folder(root, modality="CT")
    assert ds.class_names == ["background", "class1", "class2"] and [c.id for c in ds.cases] == ["a", "b"]
    assert 0.0 <= read_case(ds, "b").image.min() and read_case(ds, "b").image.max() <= 1.0
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "liver", "2": "spleen"}))
    (root / "annotated.csv").write_text("case,annotated\nb,spleen\n")
    ds = load_nifti_folder(root, modality="CT", name="organs")
    assert ds.name == "organs" and ds.class_names[1:] == ["liver", "spleen"]
    assert ds.case("b").annotated == ("spleen",) and read_case(ds, "b").annotated == (0, 2)
    (root / "labels" / "a.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'a': label file not found"):
        load_nifti_folder(root)


# --------------------------------------------------------------------------- patches
def _volume(shape: tuple[int, int, int], seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[1:3, 2:4, 1:3] = 2
    return Volume("v", rng.normal(size=(1, *shape)).astype(np.float32), label, (1.0, 1.0, 1.0), (0, 2), np.eye(4))


def test_patches_pad_small_volumes_and_balance_foreground() -> None:
    vol = _volume((7, 9, 5))
    patches = foreground_patches(vol, (8, 8, 8), n=6, fg_fraction=1.0, rng=np.random.default_rng(0))
    assert len(patches) == 6
    for image, label in patches:
        assert image.shape == (1, 8, 8, 8) and label.shape == (8, 8, 8)
        assert (label == 2).sum() == (vol.label == 2).sum()  # the whole volume fits in one patch
        assert image.dtype == np.float32 and label.dtype == np.int64
    big = _volume((40, 40, 40))
    centred = foreground_patches(big, (8, 8, 8), n=20, fg_fraction=1.0, rng=np.random.default_rng(1))
    assert all(label.any() for _, label in centred)
    uniform = foreground_patches(big, (8, 8, 8), n=20, fg_fraction=0.0, rng=np.random.default_rng(1))
    assert sum(label.any() for _, label in uniform) < 10


def test_patches_are_reproducible_and_copies() -> None:
    vol = _volume((20, 21, 22))
    a = foreground_patches(vol, (8, 8, 8), n=5, fg_fraction=0.5, rng=np.random.default_rng(3))
    b = foreground_patches(vol, (8, 8, 8), n=5, fg_fraction=0.5, rng=np.random.default_rng(3))
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    a[0][0][:] = 99.0
    assert not (vol.image == 99.0).any()


# --------------------------------------------------------------------------- real data
@pytest.mark.integration
def test_two_real_hippocampus_cases(shared_data: Path) -> None:
    root = shared_data / "msd_hippocampus"
    if not (root / "dataset.json").is_file():
        pytest.skip(f"{root} not found")
    ds = load_msd(root)
    assert ds.class_names == ["background", "Anterior", "Posterior"] and ds.modality == "MRI"
    for case in ds.cases[:2]:
        vol = read_case(ds, case)
        raw = np.asarray(nib.load(str(case.image)).dataobj, dtype=np.float32)
        assert vol.image.shape == (1, *raw.shape) and vol.label.shape == raw.shape and len(raw.shape) == 3
        assert all(25 <= s <= 60 for s in raw.shape)
        assert vol.spacing == pytest.approx((1.0, 1.0, 1.0))
        assert set(np.unique(vol.label)) <= {0, 1, 2} and (vol.label > 0).any()
        inside = vol.image[0][raw != 0]
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
