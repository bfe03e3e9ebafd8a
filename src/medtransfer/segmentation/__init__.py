"""3D segmentation transfer: volumes with partial labels, the marginal loss, metrics and U-Nets with layer groups.

* :mod:`.data`: :class:`~.data.SegDataset` from an MSD folder or a NIfTI folder, :func:`~.data.read_case`
  (validated, normalised, optionally resampled volumes), foreground-balanced patches, sliding-window inference.
* :mod:`.losses`: :func:`~.losses.partial_label_loss`, marginal cross-entropy + Dice for partially annotated volumes.
* :mod:`.metrics`: per-class Dice and HD95 (NaN = class absent from both), a bootstrap summary over cases.
* :mod:`.networks`: ``SEG_NETWORKS`` (MONAI ``BasicUNet``) with ``layer_groups()`` and head reuse by class name.

Nothing is imported or registered on ``import medtransfer.segmentation``; import the modules by name.
"""
