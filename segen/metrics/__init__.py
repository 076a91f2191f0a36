"""Metrics for generators: FID, KID and IS on torchmetrics, with the features extracted once.

- `features`: the feature networks. Inception-v3 (torch-fidelity's port of the 2015 TensorFlow
  graph, read offline from a weights file) or the penultimate layer of a segen classifier.
- `scores`: FID, KID, IS and class consistency computed by torchmetrics from given features.
- `cache`: the real side's features, computed once per (images, feature network) and kept on disk.
- `callback`: `val/fid` every N epochs during `segen train callbacks=fid`.
"""
