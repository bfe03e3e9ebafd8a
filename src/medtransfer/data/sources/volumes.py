"""3-D formats for segmentation, in the same registry as the 2-D sources (``volumetric = True``): a Medical
Segmentation Decathlon folder (``msd``) and a folder of NIfTI volumes with their labels (``nifti_folder``). They
load into :class:`~medtransfer.data.volumes.SegDataset` (cases, class names, partial labels); see
:mod:`medtransfer.data.volumes` for the layouts."""

from __future__ import annotations

from pathlib import Path

from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.data.volumes import NIFTI_SUFFIXES, SegDataset, load_msd, load_nifti_folder


@DATA_SOURCES.register("msd")
class MSDSource(DataSource):
    name = "msd"
    description = "a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, labelsTr/)"
    volumetric = True

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_dir() and (path / "dataset.json").is_file()

    def load(self, path: Path, options: SourceOptions) -> SegDataset:
        return load_msd(path)


@DATA_SOURCES.register("nifti_folder")
class NiftiFolderSource(DataSource):
    name = "nifti_folder"
    description = "a folder with images/<case>.nii.gz and labels/<case>.nii.gz (optional classes.json)"
    volumetric = True

    @staticmethod
    def detect(path: Path) -> bool:
        images = path / "images"
        return path.is_dir() and images.is_dir() and any(p.name.endswith(NIFTI_SUFFIXES) for p in images.iterdir())

    def load(self, path: Path, options: SourceOptions) -> SegDataset:
        return load_nifti_folder(path)
