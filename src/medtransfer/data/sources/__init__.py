"""Built-in data sources. Each module registers itself in ``DATA_SOURCES`` when imported;
:func:`medtransfer.data.sources.base.builtin_sources` imports them by explicit name on first use."""
