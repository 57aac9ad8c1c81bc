"""leanfit: find small, accurate image classifiers, and keep finding them as the data changes."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `leanfit.optimize` without importing the search (torch, MLflow) with `import leanfit`
    if name in ("optimize", "SearchResult"):
        from leanfit import api

        return getattr(api, name)
    if name == "Trial":
        from leanfit.objective import Trial

        return Trial
    raise AttributeError(f"module 'leanfit' has no attribute {name!r}")


__all__ = ["SearchResult", "Trial", "optimize"]
