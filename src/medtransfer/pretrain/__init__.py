"""Building source models and choosing among them.

``build.py`` (``medtransfer pretrain``: supervised through the training run, or ``ssl.py`` SimCLR; both end in a
source-model folder with a ``source.yaml`` card), ``features.py`` (frozen features, linear probes),
``source_build.py`` (``medtransfer sources build``: the recipes' defaults, built
atomically into the catalogue) and ``rank.py`` (LogME / probe transferability, ``medtransfer sources rank``).
The catalogue they write into (``medtransfer sources list``) is :mod:`medtransfer.models.catalogue`.
"""
