"""Networks from genotypes: the block library, the builder, and parameter and MAC counts.

Its names are read from the builder (torch) when first asked for, not when the package is
imported: the package's torch-free modules (`leanfit.models.cost`) are imported by a search's
controller, which trains nothing (torch is about 1.5 s of CPU a process)."""

__all__ = ["build_model", "count_macs", "count_params"]


def __getattr__(name: str):
    if name in __all__:
        from leanfit.models import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'leanfit.models' has no attribute {name!r}")
