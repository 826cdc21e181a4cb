"""Exporters from labelwise datasets and predictions to other tools' layouts.

* :func:`export_nnunet`: an nnU-Net v2 raw dataset (``labelwise data export nnunet``).
* :func:`export_dicom_seg`: DICOM Segmentation objects referencing the source series (``labelwise export
  dicom-seg``; needs the ``[dicom]`` extra).

Each builds its output folder in a hidden sibling and swaps it in when complete (:class:`labelwise.io.StagedDir`).
"""

from __future__ import annotations

from labelwise.data.export.dicom_seg import export_dicom_seg, source_series
from labelwise.data.export.nnunet import Corrections, NnunetExport, export_nnunet, nnunet_folder_name

__all__ = [
    "Corrections",
    "NnunetExport",
    "export_dicom_seg",
    "export_nnunet",
    "nnunet_folder_name",
    "source_series",
]
