"""The pipeline's KFP components: one thin component per step, each calling one function in
`leanfit.steps` (a component body ships as source, so it imports what it uses inside itself).

`build_components(image)` makes them for one container image: the image every step and trial of a
cluster run uses (`executor.kubernetes.image` in the experiment file).
"""

from __future__ import annotations

from leanfit.components.augment_policy import augment_policy
from leanfit.components.evaluate_register import evaluate_register
from leanfit.components.final_train import final_train
from leanfit.components.fingerprint import fingerprint
from leanfit.components.search import search
from leanfit.components.subset import subset

STEPS = {
    "fingerprint": fingerprint,
    "subset": subset,
    "augment-policy": augment_policy,
    "search": search,
    "final-train": final_train,
    "evaluate-register": evaluate_register,
}


def build_components(image: str) -> dict:
    """Each step as a KFP component running in `image` (which has leanfit and kfp installed)."""
    from kfp import dsl

    return {
        name: dsl.component(func=function, base_image=image, install_kfp_package=False)
        for name, function in STEPS.items()
    }
