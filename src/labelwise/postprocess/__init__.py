"""Post-processing of predicted probability maps: dense CRF, thresholds, connected-component clean-up.

Steps applied to a method's output, not methods themselves (used by the weakly supervised ``cam`` and ``cltn``).
This package sits on the models floor: it imports ``errors`` (and numpy, scipy and torch inside functions), never
``methods`` or ``engine``. The reference dense CRF back-end needs the optional extra ``labelwise[crf]``.
"""

from __future__ import annotations

from labelwise.postprocess.components import clean_mask
from labelwise.postprocess.crf import CRFConfig, dense_crf
from labelwise.postprocess.threshold import otsu_threshold, rescale_probability

__all__ = ["CRFConfig", "clean_mask", "dense_crf", "otsu_threshold", "rescale_probability"]
