"""The unit every method consumes: one image with its rater label maps and image-level labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Case"]


@dataclass(frozen=True)
class Case:
    """One case (a 2D image or a 3D volume) with everything known about it.

    Attributes:
        id: Unique case id within its dataset.
        image: ``(C, *spatial)`` float32 intensities (no normalisation applied).
        spacing_mm: Voxel size per spatial axis in millimetres.
        affine: ``(4, 4)`` voxel -> world transform of the source file; used to write results back.
        raters: ``(R, *spatial)`` int16 label maps, one per rater present for this case; ``R == 0`` means
            unlabelled. Values are class indices into ``class_names`` (0 = background).
        rater_ids: Ids of the raters in ``raters``, in order (a subset of the dataset's rater ids when some
            raters are missing for this case).
        image_labels: Image-level labels, e.g. ``{"lesion": 1}`` or ``{"diagnosis": 2}``; empty if none.
        class_names: Names of the label classes, index 0 is background.
        split: ``"train"``, ``"val"``, ``"test"`` or None.
        labelled_slices: For partially labelled volumes, the indices along the last spatial axis whose labels
            are valid (None: every slice of a present rater map is valid).
        image_read: False when the case was loaded without its voxels (``Dataset.load(..., image=False)``):
            ``image`` is then a read-only NaN placeholder that only gives the shape.

    """

    id: str
    image: np.ndarray = field(repr=False)
    spacing_mm: tuple[float, ...]
    affine: np.ndarray = field(repr=False)
    raters: np.ndarray = field(repr=False)
    rater_ids: tuple[str, ...] = ()
    image_labels: dict[str, int] = field(default_factory=dict)
    class_names: tuple[str, ...] = ("background", "foreground")
    split: str | None = None
    labelled_slices: tuple[int, ...] | None = None
    image_read: bool = True

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.image.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes."""
        return tuple(self.image.shape[1:])

    @property
    def num_raters(self) -> int:
        """Number of raters present for this case (0 = unlabelled)."""
        return int(self.raters.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of label classes including background."""
        return len(self.class_names)

    def rater_stack(self, all_rater_ids: tuple[str, ...] | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return the raters aligned to a dataset-wide rater order.

        Args:
            all_rater_ids: The dataset's rater ids, length R.

        Returns:
            ``(labels, present)``: labels ``(R, *spatial)`` int16 (zeros where a rater is missing) and
            present ``(R,)`` bool.

        """
        labels = np.zeros((len(all_rater_ids), *self.spatial_shape), dtype=np.int16)
        present = np.zeros(len(all_rater_ids), dtype=bool)
        index = {rid: i for i, rid in enumerate(self.rater_ids)}
        for j, rid in enumerate(all_rater_ids):
            if rid in index:
                labels[j] = self.raters[index[rid]]
                present[j] = True
        return labels, present
