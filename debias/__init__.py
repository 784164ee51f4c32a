"""debias: measure and reduce shortcut bias in learned image representations.

The package is laid out the way the work flows:
``debias.data`` -> ``debias.models`` + ``debias.losses`` -> ``debias.train`` ->
``debias.metrics`` -> ``debias.sweep`` / ``debias.report`` / ``debias.audit`` -> ``debias.cli``.
"""

__version__ = "0.1.0"

# Public registration, importable as ``debias.register_loss`` etc.; resolved on first use so
# that ``import debias`` (and ``debias --help``) stays light.
_REGISTRATION = {
    "register_dataset": "debias.data.registry",
    "DatasetSpec": "debias.data.spec",
    "DataOption": "debias.data.spec",
    "register_model": "debias.models.registry",
    "register_loss": "debias.losses",
    "register_method": "debias.methods",
}
__all__ = ["__version__", *_REGISTRATION]


def __getattr__(name: str):
    if name in _REGISTRATION:
        import importlib

        return getattr(importlib.import_module(_REGISTRATION[name]), name)
    raise AttributeError(f"module 'debias' has no attribute {name!r}")
