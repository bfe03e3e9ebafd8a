"""Transfer strategies: which layer groups train when, and at which learning rate.

A strategy is a small object with hooks (:mod:`medtransfer.transfer.strategies`); the registry
:data:`~medtransfer.transfer.strategies.STRATEGIES` holds ``scratch``, ``linear_probe``, ``finetune``,
``discriminative``, ``gradual_unfreeze`` and ``recipe``.
"""
