"""Strategy ``recipe``: an alias of the published recipe that won our PneumoniaMNIST study
(:data:`~medtransfer.transfer.strategies.RECIPE`, docs/results/pneumonia/notes.md), never a schedule of its own.

The last of the built-in modules the registry imports, after the recipe it names."""

from __future__ import annotations

from medtransfer.transfer.strategies import RECIPE, STRATEGIES

STRATEGIES.register("recipe", STRATEGIES.get(RECIPE))
