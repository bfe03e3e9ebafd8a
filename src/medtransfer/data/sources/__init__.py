"""Built-in data sources, imported by explicit name so each registers itself once."""

from medtransfer.data.sources import folder, medmnist, mednist, nih_cxr14, synthetic  # noqa: F401
