"""Conditional search spaces: parameters, sampling, and the flat scikit-optimize encoding."""

from leanfit.space.architecture import MODULE_PARAMS, MODULES, architecture_params
from leanfit.space.spec import Param, SearchSpace

__all__ = ["MODULES", "MODULE_PARAMS", "Param", "SearchSpace", "architecture_params"]
