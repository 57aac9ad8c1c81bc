"""Your own objective, searched by leanfit: `leanfit.optimize(function, "experiment.yaml")`.

The function trains (or evaluates) one configuration of the file's space up to `trial.epochs`
and reports its validation accuracy after each epoch; what it returns is handed back to it as
`trial.state` when the scheduler promotes the trial to more epochs, so a promoted trial goes on
from where it stopped, as leanfit's own training does:

    def objective(trial):
        model = trial.state or build(trial.config)
        while trial.running:          # up to trial.epochs, or until its learning curve says stop
            train_one_epoch(model, trial.config["lr"])
            trial.report(accuracy(model))
        return model                  # pickled; trial.state at the trial's next rung
                                      # (None: a promoted trial trains from epoch 0)

The function runs in leanfit's worker processes, so it must be importable: defined at the top
level of a module, or of the script that calls `leanfit.optimize` (loaded in each worker under
another name, so its `if __name__ == "__main__":` block does not run there). `workers=0` runs it
in the calling process instead (a notebook's function, a lambda), one trial at a time and
without a worker's isolation.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leanfit.errors import LeanfitError

# The module name a script's objective is loaded under in a worker (as multiprocessing loads a
# spawned child's main script): not "__main__", so the script's guarded search does not run again
SCRIPT_MODULE = "__leanfit_objective__"


class Trial:
    """One job of a trial, as the objective function sees it.

    Attributes:
        config: the configuration to train, a flat dict of the space's names (architecture
            choices and hyperparameters).
        epochs: train up to this many epochs in all (this rung's budget).
        state: what the function returned at the trial's rung below, or None on its first job.
        epoch: epochs trained so far, counting the rungs below: `state`'s epochs, then one more
            at each `report`.
        schedule_epochs: the epochs a learning-rate schedule should span: this rung's (each
            rung anneals to its own end, and a promotion anneals again from the weights it
            inherits, a warm restart, as leanfit's own trials do).
        data_fraction, resolution: this rung's share of the training data and image size, where
            the file makes them fidelities (1.0 and None otherwise).
        seed: a seed for this trial's randomness.
        number: the search's number of the trial (0, 1, ...); rung: the rung this job trains
            to (0 first).
    """

    def __init__(self, spec, state: Any, start_epoch: int, earlier: list[dict[str, float]]):
        self.config: dict[str, Any] = dict(spec.config)
        self.epochs: int = spec.epochs
        self.state = state
        self.epoch: int = start_epoch
        self.schedule_epochs: int = spec.schedule_epochs or spec.epochs
        self.data_fraction: float = spec.data_fraction
        self.resolution: int | None = spec.resolution
        self.seed: int = spec.seed
        found = re.fullmatch(r"trial-(\d+)-rung-(\d+)", spec.trial_id)
        self.number: int | None = int(found.group(1)) if found else None
        self.rung: int | None = int(found.group(2)) if found else None
        self.history: list[dict[str, float]] = []  # this job's reports
        self.stop_reason: str | None = None
        self._earlier = earlier
        self._curve_stop = spec.curve_stop

    @property
    def running(self) -> bool:
        """True until `epoch` reaches `epochs` or the learning curve says the trial cannot reach
        the top of its rung (`scheduler.curve_stop`)."""
        return self.epoch < self.epochs and self.stop_reason is None

    def report(self, val_accuracy: float, **metrics: float) -> bool:
        """The validation accuracy (in [0, 1]) after one more epoch, with any other numbers to
        log beside it (`train_loss=...`). Returns `running`."""
        from leanfit import stopping
        from leanfit.train.curve import CURVE_TOLERANCE

        if stopping.asked():
            # the search in this process was asked to stop (Ctrl-C, `workers=0`): the trial
            # ends here as interrupted, and a resume trains its rung again (it trained the
            # whole rung first: minutes, where the search stops within a second)
            raise KeyboardInterrupt
        if self.epoch >= self.epochs:
            start = self.epoch - len(self.history)
            where = f" (a promoted trial starts at trial.epoch {start}, not 0)" if start else ""
            raise RuntimeError(
                f"trial.report: epoch {self.epoch + 1} is past this rung's trial.epochs "
                f"({self.epochs}); loop `while trial.running:`{where}"
            )
        entry = {"epoch": float(self.epoch + 1)}
        entry["val_accuracy"] = _number("val_accuracy", val_accuracy)
        for name, value in metrics.items():
            if name in OWN_METRICS:  # (MLflow kept both, and read back the user's as leanfit's)
                raise TypeError(
                    f"trial.report: {name}= is a metric leanfit logs itself for each trial "
                    f"({OWN_METRICS[name]}); give yours another name, e.g. my_{name}="
                )
            entry[name] = _number(name, value)
        self.epoch += 1
        self.history.append(entry)
        if self._curve_stop is not None and self.epoch < self.epochs:
            self.stop_reason = self._curve_stop.reason(
                self._earlier + self.history, CURVE_TOLERANCE
            )
        return self.running


# What leanfit logs in a trial's run itself: a metric of the objective's of the same name
# was logged beside it and read back in its place (a trial's size, the step of every figure)
OWN_METRICS = {
    "epoch": "the step of every figure",
    "params": "the model's size, from size=",
    "macs": "the model's MACs",
    "wall_time": "the trial's time",
    "train_time": "the trial's training time",
}


def _number(name: str, value: Any) -> float:
    if isinstance(value, str | bytes | bool):  # float() takes "0.9" and True: not an accuracy
        raise TypeError(
            f"trial.report: {name} must be a number, got {type(value).__name__} {value!r}"
        )
    detach = getattr(value, "detach", None)  # a tensor with its graph (a loss as computed):
    if callable(detach):  # its value, without torch's warning on converting one
        value = detach()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"trial.report: {name} must be a number, got {type(value).__name__} {value!r}"
        ) from None


def target_of(function: Callable) -> str:
    """Where a worker finds `function`: "module:name", or "/path/script.py:name" for one defined
    in the script being run. A function a worker cannot find is refused, with the fix."""
    if not callable(function):
        raise LeanfitError(
            f"objective: {function!r} is not a function; give the function that trains a trial"
        )
    import functools
    import inspect

    imported_by_name = (
        "which leanfit's worker processes cannot rebuild (they import a function by its name); "
        "give a function defined with `def` at the top level of your script or module (it can "
        "build what it needs itself), or pass workers=0 to run it in this process"
    )
    if inspect.ismethod(function) and not inspect.isclass(function.__self__):
        raise LeanfitError(  # (the worker would import the plain function and call it unbound)
            f"objective: {function.__qualname__} is a method of an object "
            f"({type(function.__self__).__name__}), {imported_by_name}"
        )
    if isinstance(function, functools.partial):
        raise LeanfitError(
            f"objective: a functools.partial of {getattr(function.func, '__qualname__', '?')}, "
            + imported_by_name
        )
    if not (inspect.isfunction(function) or inspect.ismethod(function)):
        raise LeanfitError(
            f"objective: an object of class {type(function).__qualname__} that can be called, "
            + imported_by_name
        )
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", "")
    if module is None or not name or "<" in name:  # a lambda, a nested function
        raise LeanfitError(
            f"objective: {name or repr(function)} is not defined at the top level of a module, so "
            "leanfit's worker processes cannot import it; define it with `def` at the top level "
            "of your script or module, or pass workers=0 to run it in this process"
        )
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name not in ("__main__", ""):
            return f"{spec.name}:{name}"  # `python -m package.module`: importable by its name
        script = getattr(main, "__file__", None)
        if script is not None and not Path(script).is_file():  # `python - < script.py`
            raise LeanfitError(
                f"objective: {name} is defined in a script read from standard input ({script}), "
                "which leanfit's worker processes cannot import; save it as a .py file and run "
                "that, or pass workers=0 to run it in this process"
            )
        if script is None:  # an interactive session, a notebook
            raise LeanfitError(
                f"objective: {name} is defined in an interactive session, which leanfit's worker "
                "processes cannot import; pass workers=0 to run it in this process, or move it "
                "to a .py file"
            )
        tree = _script_tree(Path(script))  # (read and parsed once, for both checks)
        if _under_main_guard(tree, name):
            raise LeanfitError(
                f'objective: {name} is defined under `if __name__ == "__main__":` in {script}, '
                "which leanfit's worker processes do not run (they load the script as a module); "
                "define it above that block, at the top level, or pass workers=0 to run it in "
                "this process"
            )
        if _calls_optimize_unguarded(tree):
            raise LeanfitError(
                f"objective: {script} calls optimize at its top level, outside "
                '`if __name__ == "__main__":`; leanfit\'s worker processes load the script as a '
                f"module to find {name}, and each would start the search again: put the call "
                "under that guard, or pass workers=0 to run the trials in this process"
            )
        return f"{Path(script).resolve()}:{name}"
    return f"{module}:{name}"


def _script_tree(script):
    """The script's syntax tree (as given, if it already is one), or None where it cannot be
    read or parsed."""
    import ast

    if isinstance(script, ast.Module):
        return script
    try:
        return ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return None


def _is_main_guard(node) -> bool:
    """An `if __name__ == "__main__":` block (any test naming `__name__`)."""
    import ast

    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)


def _calls_optimize_unguarded(script) -> bool:
    """Whether a script (its path or its tree) calls `optimize` (`leanfit.optimize`, or
    imported by that name) in a statement a module import runs: at its top level, outside
    functions, classes and the `if __name__ == "__main__":` block. False when it cannot tell."""
    import ast

    tree = _script_tree(script)
    if tree is None:
        return False
    skipped = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)

    def calls(node) -> bool:
        if isinstance(node, skipped):
            return False
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "optimize") or (
                isinstance(f, ast.Attribute) and f.attr == "optimize"
            ):
                return True
        return any(calls(child) for child in ast.iter_child_nodes(node))

    return any(calls(node) for node in tree.body if not _is_main_guard(node))


def _under_main_guard(script, name: str) -> bool:
    """Whether a script (its path or its tree) defines `name` only inside an `if __name__ ==
    "__main__":` block (which a worker loading the script as a module skips). False when it
    cannot tell."""
    import ast

    tree = _script_tree(script)
    if tree is None:
        return False

    def defines(nodes) -> bool:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return True
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return True
            if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name).split(".")[0] == name for a in node.names
            ):
                return True
        return False

    if defines(tree.body):
        return False
    guards = [node for node in tree.body if _is_main_guard(node)]
    return any(defines(ast.walk(guard)) for guard in guards)


def identity_of(function: Callable) -> str:
    """What names a search of `function` (see `leanfit.track.search.TAG_OBJECTIVE`): its import
    path, or for one no worker could import (workers=0) its module and name."""
    try:
        return f"python:{target_of(function)}"
    except LeanfitError:
        module = getattr(function, "__module__", None) or "?"
        return f"python:{module}:{getattr(function, '__qualname__', repr(function))}"


def load_function(target: str) -> Callable:
    """The function `target_of` named."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(SCRIPT_MODULE, where)
        if spec is None or spec.loader is None or not os.path.isfile(where):
            raise LeanfitError(f"objective: the script {where} is gone; run the search again")
        module = importlib.util.module_from_spec(spec)
        sys.modules[SCRIPT_MODULE] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    found: Any = module
    for part in name.split("."):
        if not hasattr(found, part):
            raise LeanfitError(
                f"objective: {where} has no {name} at its top level when imported (defined "
                'under `if __name__ == "__main__":`, or in a function?); define it at the top '
                "level, or pass workers=0 to run it in this process"
            )
        found = getattr(found, part)
    return found


def function_runner(target: str, threads: int | None = None):
    """The runner factory of a worker: the objective function loaded once, then called for
    every trial job handed over. `threads`: torch's CPU threads in this worker (the cores shared
    out among the workers, as for leanfit's own training), where torch is there."""
    if threads and "torch" in sys.modules:  # the fork server imported it; a spawned one may not
        sys.modules["torch"].set_num_threads(threads)
    return make_runner(load_function(target))


def in_process_runner(function: Callable):
    """`make_runner` for the calling process (workers=0): an exception in one trial fails that
    trial, as it would in a worker, instead of ending the search."""
    run = make_runner(function)

    def guarded(spec):
        try:
            return run(spec)
        except Exception as e:  # noqa: BLE001 - a bug in one trial fails that trial only
            import traceback

            from leanfit.errors import failure_reason
            from leanfit.train.result import TrainResult

            reason = failure_reason(e, traceback.format_exc(limit=6), spec.own_folders)
            return TrainResult("failed", reason=reason)

    return guarded


def make_runner(function: Callable):
    """A runner (spec -> TrainResult) around an objective function: the state from the rung
    below in, the reports and the returned state (pickled, to `spec.checkpoint_to`) out."""

    def run(spec):
        from leanfit.train.result import TrainResult

        started = time.perf_counter()
        state, start, earlier = None, 0, []
        if spec.resume_from:
            with open(spec.resume_from, "rb") as f:
                saved = pickle.load(f)
            if saved["state"] is not None:  # else nothing to go on from: trained from the start
                state, start, earlier = saved["state"], saved["epochs"], saved["history"]
        trial = Trial(spec, state, start, earlier)
        returned = function(trial)
        elapsed = time.perf_counter() - started
        if not trial.history:
            return TrainResult(
                "failed",
                reason="the objective reported no accuracy: call trial.report(val_accuracy) "
                "after each epoch, while trial.running",
                wall_time=elapsed,
            )
        bad = [h["val_accuracy"] for h in trial.history if not 0.0 <= h["val_accuracy"] <= 1.0]
        if bad:  # NaN among them: a diverged training
            if any(math.isnan(v) for v in bad):
                what = "NaN"
            elif all(1.5 < v <= 100.0 for v in bad):  # the first line, shared: one group of them
                # (1.02 is no percentage: divided by 100 it would be 0.0102)
                what = (
                    "above 1: a percentage? report a fraction in [0, 1] "
                    f"(report(acc / 100))\nreported {bad[0]!r}"
                )
            else:
                what = f"outside [0, 1]\nreported {bad[0]!r}"
            return TrainResult(
                "failed", trial.history, reason=f"val_accuracy {what}", wall_time=elapsed
            )
        out = TrainResult(
            "stopped" if trial.stop_reason else "ok",
            trial.history,
            epochs=trial.epoch,
            reason=trial.stop_reason,
            wall_time=elapsed,
            train_time=elapsed,
        )
        if spec.checkpoint_to:
            path = Path(spec.checkpoint_to)
            path.parent.mkdir(parents=True, exist_ok=True)
            saved = {"state": returned, "epochs": trial.epoch, "history": earlier + trial.history}
            try:
                blob = pickle.dumps(saved)
            except Exception as e:  # noqa: BLE001 - whatever pickle raises for this object
                out.status = "failed"
                out.reason = (
                    f"the state the objective returned cannot be pickled ({type(e).__name__}: "
                    f"{e}); return something pickle can save (a state_dict, a path), or None"
                )
                return out
            tmp = path.with_suffix(".tmp")
            try:
                tmp.write_bytes(blob)
                os.replace(tmp, path)  # whole or absent: a worker killed mid-write leaves no half
            except OSError as e:  # (a full disk, a file-size limit: no partial file left)
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if e.filename is None:  # a write's error names no file
                    raise OSError(e.errno, e.strerror, str(path)) from e
                raise
            out.checkpoint = str(path)
        return out

    return run


class OwnSpace:
    """A space of one's own for `leanfit.optimize(objective, space=..., size=...)`, in place of
    the experiment file's architecture and hyperparameters: the function gets these names in
    `trial.config`, and `size(config)` gives the parameter count (or `(parameters, MACs)`) that
    the size objective, `objectives.max_params` and the proposals' spread over sizes use. It is
    called in the search's own process, often (hundreds of candidates a proposal; each answer is
    kept): count the parameters without training anything.

    Without `size`, the objectives must be validation accuracy alone."""

    def __init__(self, space: Any, size: Callable | None, objectives) -> None:
        import hashlib
        import json
        from dataclasses import asdict

        from leanfit.config import space_from_mapping
        from leanfit.errors import ConfigError
        from leanfit.space.spec import SearchSpace

        self.space = space if isinstance(space, SearchSpace) else space_from_mapping(space)
        if not self.space.dimensions:  # (skopt refused it once the search had started)
            raise ConfigError(
                "space",
                "nothing to search: every parameter has one value; give one a list of "
                "choices or a range",
            )
        self.size = size
        metrics = {t.metric for t in objectives.targets}
        if objectives.max_params:
            metrics.add("params")
        if objectives.max_macs:
            metrics.add("macs")
        sized = sorted(metrics & {"params", "macs"})
        if size is not None and not callable(size):
            raise ConfigError("size", f"{size!r} is not a function; give one of a configuration")
        if size is None and sized:
            raise ConfigError(
                "size",
                f"the objectives use {' and '.join(sized)}, which a space of your own cannot "
                "count; give size=, a function of a configuration (a dict of the space's names) "
                "that returns its parameter count, or (parameters, MACs); or make val_accuracy "
                "the only objective (objectives: {targets: [{metric: val_accuracy, goal: "
                "maximize}]})",
            )
        self.needs_macs = "macs" in sized
        self.max_params = objectives.max_params
        self._name = getattr(size, "__name__", repr(size)) if size is not None else None
        named = f"{getattr(size, '__module__', '?')}:{getattr(size, '__qualname__', self._name)}"
        self._known: dict[tuple, tuple[int, int]] = {}
        described = {
            "params": [asdict(p) for p in self.space.params],
            "fixed": self.space.fixed,
            "size": None if size is None else named,
        }
        blob = json.dumps(described, sort_keys=True, default=repr)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        if size is not None:
            self.cost(self.space.sample(0))  # a size function's mistake, before anything starts

    def size_range(self, draws: int = 1000):
        """The log10 parameter counts of the space's models, from the smallest to the largest
        of `draws` random configurations (to half a decade, outwards; the largest at most
        `objectives.max_params`): what the search's hypervolume is measured over and its
        proposals scale sizes by, in place of leanfit's own 10^2 to 10^4.5. None without
        `size`."""
        import random

        if self.size is None:
            return None
        rng = random.Random(0)
        sizes = [max(1, self.cost(self.space.sample(rng))[0]) for _ in range(draws)]
        top = max(sizes) if not self.max_params else min(max(sizes), self.max_params)
        low = math.floor(2 * math.log10(min(sizes))) / 2
        high = math.ceil(2 * math.log10(max(top, 1)) + 1e-9) / 2  # the largest adds something
        return (low, max(high, low + 0.5))

    def crossover_group(self, seed: int = 0, pairs: int = 16) -> Callable[[str], bool]:
        """Which parameters a crossover child takes from its second parent (the rest from its
        first), as leanfit's own space takes the training hyper-parameters from one parent and
        the architecture from the other: here the parameters that never changed the size when
        one was swapped between two random configurations (`pairs` of them), so a child is one
        parent's model trained the other's way. Without `size`, or when no parameter (or
        every one) leaves the size alone, a child takes each parameter from either parent at
        random (uniform crossover)."""
        import random

        from leanfit.search.evolution import crossover

        if self.size is None:
            return UniformSplit(seed)
        names = [p.name for p in self.space.params]
        neutral = set(names)
        rng = random.Random(seed)
        for _ in range(pairs):
            first, second = self.space.sample(rng), self.space.sample(rng)
            size = self.cost(first)
            for name in sorted(neutral):
                child = crossover(self.space, first, second, name.__eq__, rng)
                if self.cost(child) != size:
                    neutral.discard(name)
        if neutral and len(neutral) < len(names):
            return frozenset(neutral).__contains__
        return UniformSplit(seed)

    def cost(self, config) -> tuple[int, int]:
        """(parameters, MACs) of a configuration, as `size` gives them ((0, 0) without it)."""
        if self.size is None:
            return (0, 0)
        key = self.space.point_key(self.space.point(config))
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = self._ask(dict(config))
        return known

    def _ask(self, config: dict[str, Any]) -> tuple[int, int]:
        from leanfit.errors import ConfigError

        try:
            out = self.size(config)
        except Exception as e:  # noqa: BLE001 - the user's function, whatever it raises
            raise ConfigError(
                "size",
                f"{self._name} raised {type(e).__name__}: {e} for the configuration {config}; "
                "it must count every configuration of the space",
            ) from e
        values = list(out) if isinstance(out, (tuple, list)) else [out]
        counts = [_count(v) for v in values]
        if len(values) not in (1, 2) or None in counts:
            raise ConfigError(
                "size",
                f"{self._name} returned {out!r} for the configuration {config}; return the "
                "parameter count (an int of 0 or more), or (parameters, MACs)",
            )
        if len(counts) == 1 and self.needs_macs:
            raise ConfigError(
                "size",
                f"{self._name} returned one count, but the objectives use MACs; return "
                "(parameters, MACs)",
            )
        return (counts[0], counts[1] if len(counts) == 2 else 0)


class UniformSplit:
    """A crossover group of no fixed names: each parameter from either parent, at random
    (seeded, so a search proposes alike when it runs again)."""

    def __init__(self, seed: int = 0) -> None:
        import random

        self._rng = random.Random(seed)

    def __call__(self, name: str) -> bool:
        return self._rng.random() < 0.5


def _count(value: Any) -> int | None:
    """A count from what a size function returned: an int (or an integral number) of 0 or
    more; None for anything else."""
    if isinstance(value, bool) or not hasattr(value, "__index__") and not isinstance(value, float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    return number if number >= 0 else None
