"""Task kinds: what ``binary``, ``multiclass``, ``multilabel``, ``regression``, ``segmentation`` and ``unlabelled``
mean everywhere (see :mod:`medtransfer.tasks.base`). Nothing is registered on import of this package;
:func:`~medtransfer.tasks.base.task_kind` imports the built-in kinds by name."""
