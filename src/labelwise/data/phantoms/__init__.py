"""Seeded synthetic phantoms: organ-like images with lesions, a known truth and simulated raters of distinct styles.

A phantom is a 2D image or 3D volume with a body, an organ (a rotated ellipse/ellipsoid with a wavy boundary),
0 to ``max_lesions`` lesions inside the organ (bright or dark blobs), smooth texture, a multiplicative bias field
and Gaussian noise. Its **truth** label map is known exactly, and R simulated raters label it, each in a
documented :class:`RaterStyle`:

============== ==========================================================================================
style          what the rater does (defaults of :data:`DEFAULT_RATER_STYLES`)
============== ==========================================================================================
``precise``    follows the boundary with little jitter (0.5 mm)
``generous``   over-segments: boundary moved out by 1.5 mm (plus 0.5 mm jitter)
``tight``      under-segments: boundary moved in by 1.5 mm (plus 0.5 mm jitter)
``sloppy``     strong smooth boundary jitter (2 mm, correlation length 6 mm)
``hasty``      misses small components (equivalent radius < 4 mm) with probability 0.8
``shifted``    systematic 2 mm shift in one direction (the same for every case; drawn once per rater)
============== ==========================================================================================

``raters=R`` takes the first R styles of that table (cycling, with a numeric suffix, beyond six);
:func:`random_rater_styles` draws any number of varied styles instead. Each rater is
applied per class on the truth's signed distance map (in mm, spacing-aware): ``label = sd + bias_mm +
jitter_mm * noise > 0``, then small components are dropped and the map is shifted. Everything a rater drew is
recorded per case (:class:`RaterRecord`).

Classes (``structures``): ``"organ"`` -> ``("background", "organ")`` where lesions count as organ (like a
tumour inside a liver mask); ``"lesion"`` -> ``("background", "lesion")``; ``"organ+lesion"`` ->
``("background", "organ", "lesion")`` with lesion drawn over organ. Every case has the image-level label
``lesion`` (1 if it has at least one lesion, else 0); a fraction ``1 - lesion_fraction`` has none.

Example:
    >>> p = make_phantom(seed=0, shape=(32, 32), raters=3)
    >>> p.image.shape, p.image.dtype, p.truth.shape, p.raters.shape, p.rater_ids
    ((1, 32, 32), dtype('float32'), (32, 32), (3, 32, 32), ('precise', 'generous', 'tight'))
    >>> bool((p.raters[1] >= p.truth).all())     # the generous rater covers the whole truth
    True

"""

from __future__ import annotations

from labelwise.data.phantoms.dataset import (
    PHANTOM_INFO_NAME,
    make_phantom_dataset,
    read_phantom_info,
    read_phantom_truth,
)
from labelwise.data.phantoms.phantom import Phantom, Structures, make_phantom
from labelwise.data.phantoms.raters import RaterRecord
from labelwise.data.phantoms.styles import DEFAULT_RATER_STYLES, RaterStyle, random_rater_styles, resolve_styles

__all__ = [
    "DEFAULT_RATER_STYLES",
    "PHANTOM_INFO_NAME",
    "Phantom",
    "RaterRecord",
    "RaterStyle",
    "Structures",
    "make_phantom",
    "make_phantom_dataset",
    "random_rater_styles",
    "read_phantom_info",
    "read_phantom_truth",
    "resolve_styles",
]
