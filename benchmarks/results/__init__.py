"""Results pipeline: one module per results table, records in ``docs/results/``, rendered into ``docs/results.md``."""
