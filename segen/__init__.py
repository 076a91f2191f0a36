"""segen: train, sample and evaluate image models for segmentation and generation.

Importing the package is cheap on purpose (no torch): `segen --help` must answer in well under
a second.
"""

__version__ = "0.1.0"
