"""Transfer strategies: which layer groups train when, and at which learning rate.

:mod:`~medtransfer.transfer.base` holds :class:`~medtransfer.transfer.base.Strategy` and its helpers;
:mod:`~medtransfer.transfer.strategies` the registry :data:`~medtransfer.transfer.strategies.STRATEGIES`, which
imports the built-in modules on its first lookup: ``simple`` (``scratch``, ``linear_probe``, ``finetune``,
``discriminative``, ``gradual_unfreeze``, ``decoder_finetune``), ``romero``, ``fastai`` and ``recipe`` (an alias).
Each strategy declares its ``transfer`` keys as a settings dataclass of its own.
"""
