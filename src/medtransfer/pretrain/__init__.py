"""Building source models and choosing among them.

``build.py`` (``medtransfer pretrain``: supervised through the training run, or ``ssl.py`` SimCLR; both end in a
source-model folder with a ``source.yaml`` card), ``features.py`` (frozen features, linear probes), ``catalogue.py``
(``medtransfer sources list``) and ``rank.py`` (LogME / probe transferability, ``medtransfer sources rank``).
"""
