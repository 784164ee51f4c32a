"""debias: measure and reduce shortcut bias in learned image representations.

The package is laid out the way the work flows:
``debias.data`` -> ``debias.models`` + ``debias.losses`` -> ``debias.train`` ->
``debias.metrics`` -> ``debias.sweep`` / ``debias.report`` / ``debias.audit`` -> ``debias.cli``.
"""

__version__ = "0.1.0"
