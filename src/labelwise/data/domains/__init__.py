"""Weak supervision data: the lesion and healthy image domains built from image-level labels only.

Weakly supervised methods (:mod:`labelwise.methods.cam`, :mod:`labelwise.methods.cltn`) see two sets of images:

* **domain A (lesion)**: every training case whose image-level label ``label`` is not one of ``normal_values``;
* **domain B (healthy)**, from ``healthy_source``:

  - ``"normal"``: the training cases whose image-level label is one of ``normal_values`` (e.g. ``lesion: 0``);
  - ``"periphery"``: for datasets where every image holds a lesion (PH2: all 30 images are naevi or
    melanomas). From each domain-A image, 8 square border crops (4 corners + 4 edge midpoints, side
    ``periphery_fraction`` = 0.2 of the shorter image side) are taken and the ``periphery_keep`` = 2 *brightest*
    kept (in dermoscopy the dark parts of the border are the scope's vignette and the lesion itself is dark,
    healthy skin is the bright part). Each kept crop is mirror-tiled to the full image size, a "healthy-skin
    mosaic", and with ``periphery_mode: inpaint`` (the default) it replaces the **centre** of the lesion image
    (:func:`inpaint_centre`: the central ellipse, blended into the image's own corners): a healthy version of
    each image that keeps its field-of-view border (a dermoscope's dark vignette), so that the two domains differ
    in the centre and not in their layout. ``periphery_mode: mosaic`` uses the mosaic itself (no vignette: the
    domains then differ in layout too and both methods learnt to mark the vignette), ``zoom`` the resized crop
    (texture scale differs), ``periphery_keep: null`` the 4 corners whatever they hold. The rule assumes lesions
    are roughly centred, as in dermoscopy; a lesion reaching the corners, or skin crops that still hold lesion or
    vignette, are noise the method must absorb.
  - ``"auto"``: ``"normal"`` when at least one normal training case exists, otherwise ``"periphery"``.

**No pixel label is read**: images are read with :func:`labelwise.io.read_image` straight from the manifest's
``image`` paths, so training works on a dataset whose label files were deleted.

Handling of heterogeneous images (documented behaviour):

* different sizes: every image is resized (bilinear, anti-aliased, aspect ratio *not* kept) to
  ``image_size x image_size``; predictions are resized back to each image's own size;
* grayscale vs RGB: a 1-channel image in a dataset declared with 3 channels is replicated to 3 channels; any
  other channel mismatch is a :class:`DataError`;
* intensities: per image and channel, the 0.5th..99.5th percentile range maps linearly to [-1, 1] (clipped).

3D volumes are not used directly: :func:`write_slice_label_dataset` turns a labelled volume into a 2D dataset of
slices with slice-level ``lesion`` labels (structure present / absent); the slice masks are kept as a rater
label for evaluation only.
"""

from __future__ import annotations

from labelwise.data.domains.build import (
    DomainConfig,
    Domains,
    WeakImage,
    build_domains,
    check_domains,
    read_weak_image,
)
from labelwise.data.domains.datasets import write_example_dataset, write_slice_label_dataset
from labelwise.data.domains.healthy import centre_weight, inpaint_centre, mirror_tile, periphery_crops
from labelwise.data.domains.images import fix_channels, normalize_intensity, prepare_image, resize_chw

__all__ = [
    "DomainConfig",
    "Domains",
    "WeakImage",
    "build_domains",
    "centre_weight",
    "check_domains",
    "fix_channels",
    "inpaint_centre",
    "mirror_tile",
    "normalize_intensity",
    "periphery_crops",
    "prepare_image",
    "read_weak_image",
    "resize_chw",
    "write_example_dataset",
    "write_slice_label_dataset",
]
