"""labelwise: medical image segmentation learned from imperfect labels.

Importing the package is cheap: subpackages are imported on use (``import labelwise.metrics``).
"""

from __future__ import annotations

from labelwise.errors import LabelwiseError

__all__ = ["LabelwiseError", "__version__"]

__version__ = "0.1.0"
