"""Networks from genotypes: the block library, the builder, and parameter and MAC counts."""

from leanfit.models.builder import build_model, count_macs, count_params

__all__ = ["build_model", "count_macs", "count_params"]
