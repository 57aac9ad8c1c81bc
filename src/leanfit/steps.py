"""The pipeline's steps: one function each, called by the thin KFP components in `components/`.

fingerprint → subset → augment policy → search → final train → evaluate & register. Each step
reads the experiment (as the JSON the pipeline carries) and the artifacts of the steps before it,
and writes its own artifacts to the paths KFP hands it; nothing passes through globals. The same
functions run in `kfp.local` subprocesses on one machine and in pods on a cluster.

`run_step` is how a component calls a step: a mistake a user can cause ends the step with one line
that names it (and exit code 2), never a stack of KFP internals, and the message is also written to
the work folder so that `leanfit run` can repeat it.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from leanfit.config import Experiment, experiment_from_dict
from leanfit.errors import LeanfitError, hide_password

ERROR_FILE = "pipeline-error.json"
# The final report's readable copy, beside KFP's HTML artifact (a file named `report`)
FINAL_REPORT = "report.html"
# Where a failed step writes its message for `leanfit run`, which sets it for its own steps (one
# file a pipeline key, so two pipelines of one work folder do not read each other's); without
# it (a step run alone), `ERROR_FILE` in the work folder.
ERROR_FILE_ENV = "LEANFIT_STEP_ERROR_FILE"
# on a pipeline run: the search run its models came from
TAG_SEARCH_RUN = "leanfit.search_run_id"
# `leanfit run`'s process ID, given to its steps: each stops when that process dies
PARENT_ENV = "LEANFIT_PIPELINE_PID"
# A local pipeline's tracking URI where it holds a password (`without_tracking_password`)
TRACKING_URI_ENV = "LEANFIT_PIPELINE_TRACKING_URI"


# ---------------------------------------------------------------- the experiment as a parameter


def pipeline_arguments(experiment: Experiment) -> dict[str, str]:
    """The pipeline's parameters for running `experiment` on this machine.

    Paths become absolute (the steps run in other processes, from other folders), and the
    tracking URI is fixed now, so every step logs to the same place.
    """
    data = experiment.model_dump(mode="json")
    data["work_dir"] = str(experiment.work_path())
    data.setdefault("tracking", {})["uri"] = absolute_tracking_uri(experiment.tracking_uri())
    base_dir = str(Path(experiment.base_dir).resolve())
    return {"experiment": json.dumps(data, sort_keys=True), "base_dir": base_dir}


def absolute_tracking_uri(uri: str) -> str:
    """`sqlite:///mlflow.db` is relative to the current folder; make it mean the same anywhere."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    if "://" not in uri:  # a bare folder: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def read_experiment(experiment: str, base_dir: str) -> Experiment:
    try:
        data = json.loads(experiment)
    except json.JSONDecodeError as e:
        raise LeanfitError(f"experiment: the pipeline parameter is not JSON ({e})") from None
    return experiment_from_dict(with_tracking_password(data), Path(base_dir))


def without_tracking_password(arguments: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """`pipeline_arguments` whose tracking URI's password is masked, and the environment that
    gives the steps the whole URI (`TRACKING_URI_ENV`; {} where there is no password).
    kfp.local writes each step's parameters to the pipeline's log file, so a password in the
    URI was kept there in plain text; a step's environment is not written anywhere."""
    from leanfit.errors import hide_password

    data = json.loads(arguments["experiment"])
    uri = data.get("tracking", {}).get("uri")
    if not isinstance(uri, str) or hide_password(uri) == uri:
        return arguments, {}
    data["tracking"]["uri"] = hide_password(uri)
    masked = {**arguments, "experiment": json.dumps(data, sort_keys=True)}
    return masked, {TRACKING_URI_ENV: uri}


def with_tracking_password(data: dict) -> dict:
    """The experiment's settings with the URI `without_tracking_password` masked made whole
    again, from the step's environment; as they are otherwise."""
    from leanfit.errors import hide_password

    tracking = data.get("tracking") or {}
    whole = os.environ.get(TRACKING_URI_ENV)
    if whole and tracking.get("uri") == hide_password(whole):
        data = {**data, "tracking": {**tracking, "uri": whole}}
    return data


def pipeline_key(experiment: Experiment, digest: str, legacy: bool = False) -> str:
    """Identifies a pipeline run: the same settings on the same data need not run twice.
    `legacy`: the key as versions before made it (`key_settings`)."""
    import hashlib

    from leanfit.track.search import NO_RESULT, key_settings, splits_identity

    settings = key_settings(experiment, NO_RESULT, legacy)
    settings.get("tracking", {}).pop("uri", None)
    if settings.get("tracking") == {}:  # (the steps' file has its URI made absolute; here none)
        del settings["tracking"]
    identity = {"settings": settings, "digest": digest, **splits_identity(experiment, settings)}
    blob = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pipeline_keys(experiment: Experiment, digest: str) -> list[str]:
    """The keys a pipeline run of these settings and data may be found by: its own, then the
    one the version before made."""
    keys = [pipeline_key(experiment, digest)]
    legacy = pipeline_key(experiment, digest, legacy=True)
    return keys + ([legacy] if legacy != keys[0] else [])


def run_step(step: str, function: Callable[..., Any], experiment: str, base_dir: str, **kwargs):
    """Run one step; a user's mistake ends it with one line naming the step, and exit code 2."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # its SQLAlchemy errors come with a stack trace, and the exception is raised on to the
    # command, which says it in a line (a full disk) or shows it whole (anything else)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    from leanfit import stopping

    # SIGTERM to the step alone (`kill PID`, a pod deleted) stops it as Ctrl-C does: the search
    # records where it stopped; final training and evaluation were killed on the spot
    stopping.terminate_as_interrupt()
    if parent := os.environ.get(PARENT_ENV):
        # out of `leanfit run`'s process group: a Ctrl-C at the terminal reaches that command
        # alone, which tells each step once (see `launch._run_pipeline`); before, a stop sent
        # to the command alone (`kill -INT PID`) never reached its steps
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        stop_with(int(parent))
        sys.stdout, sys.stderr = _Unread(sys.stdout), _Unread(sys.stderr)
    work = None
    try:
        exp = read_experiment(experiment, base_dir)
        work = exp.work_path()
        result = function(exp, **kwargs)
        # KFP's executor writes the outputs and lets the interpreter end: keep its final garbage
        # collections off torch's and MLflow's objects (about 1 s a step here, 0.3 s with this)
        gc.freeze()
        return result
    except LeanfitError as e:
        message = str(e)
    except KeyboardInterrupt:
        # said where only this step was stopped (`leanfit run` reads it; a Ctrl-C of `leanfit
        # run` itself says its own line): a traceback and a bare "FAILURE" before
        how = "SIGTERM" if stopping.terminated() else "Ctrl-C"
        message = (
            f"stopped ({how}); what it finished is kept: run the pipeline again (`leanfit run "
            "FILE`) and the search and the final training resume where they stopped"
        )
        print(f"leanfit: step {step!r} stopped ({how})", file=sys.stderr, flush=True)
        _write_step_error(work, {"step": step, "message": message, "stopped": True})
        raise SystemExit(stopping.exit_code()) from None
    except Exception as e:
        from leanfit.errors import write_refused
        from leanfit.track.runs import database_refused, is_tracking_failure, server_errors

        if (refused := write_refused(e)) is not None:  # a full disk, a file-size limit
            message = (
                f"{refused}, then run the pipeline again: the search and the final training "
                "resume where they stopped"
            )
        elif (said := database_refused(e)) is not None:  # a sqlite database: locked, read-only
            message = said
        elif not is_tracking_failure(e):
            raise
        else:
            uri = json.loads(experiment).get("tracking", {}).get("uri") or "MLflow"
            message = (
                f"tracking: MLflow at {uri} "
                + ("answered with errors" if server_errors(e) else "did not answer")
                + f" ({type(e).__name__}: {str(e).splitlines()[0][:300]}), even after retrying; "
                "what finished before is kept there. Check that the server is up (its log says "
                "what failed), then run the pipeline again: the search and the final training "
                "resume where they stopped"
            )
    message = hide_password(message)  # (a tracking URI may hold its password)
    print(f"leanfit: step {step!r} failed: {message}", file=sys.stderr, flush=True)
    _write_step_error(work, {"step": step, "message": message})
    raise SystemExit(2)


class _Unread:
    """A step's stdout or stderr that goes quiet once nobody reads it: kfp.local closes a
    step's output a quarter of a second after `leanfit run` is stopped, while the step is still
    recording where it stopped, and a line written then (the search's progress) raised
    BrokenPipeError, which left the search FAILED rather than KILLED."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._quiet()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._quiet()

    def _quiet(self) -> None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 (this stream's for good)
        with contextlib.suppress(OSError, ValueError):  # (its file descriptor too: the
            os.dup2(devnull.fileno(), self._stream.fileno())  # interpreter's last flush)
        self._stream = devnull

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _write_step_error(work: Path | None, error: dict[str, Any]) -> None:
    """A step's error for `leanfit run` to say: where it set `ERROR_FILE_ENV`, else in the work
    folder (a step run alone)."""
    where = os.environ.get(ERROR_FILE_ENV) or (work / ERROR_FILE if work is not None else None)
    if where is not None:
        with contextlib.suppress(OSError):  # a full disk: the step's line is in the log
            _write_json(where, error)


def stop_with(parent: int) -> None:
    """Be told Ctrl-C (SIGINT: the search records where it stopped) when process `parent` ends:
    a thread looks every second. A `kill -9` of `leanfit run` left its running step going on as
    an orphan for up to the step's next line of output: training and writing checkpoints and
    MLflow runs under a pipeline run already marked KILLED, beside the next `leanfit run`'s.
    (Not the kernel's parent-death signal: kfp.local starts each step under `sh -c`, which
    outlives the command.)"""
    import signal
    import threading

    if not _alive(parent):  # it ended before this step started
        raise SystemExit(130)
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        # (started where SIGINT is ignored: a background job of a script, a test runner)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident

    def watch() -> None:
        while _alive(parent):
            time.sleep(1.0)
        signal.pthread_kill(main, signal.SIGINT)  # to the main thread: it wakes from a wait

    threading.Thread(target=watch, name="leanfit-pipeline-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    with contextlib.suppress(OSError, IndexError):
        # /proc/PID/stat: "PID (name) STATE ...", the name in parentheses may hold spaces
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    return True


def _write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _log(message: str) -> None:
    print(f"[leanfit] {message}", flush=True)


# ---------------------------------------------------------------- 1. fingerprint


def in_pipeline_words(text: str) -> str:
    """A search's message as the pipeline's search step says it: `leanfit run` has no
    --resume (a failed search said "`--resume` goes on with it"); the pipeline run again goes
    on with its search."""
    for said in ("`--resume` goes on", "--resume goes on"):
        text = text.replace(said, "the pipeline run again goes on")
    from leanfit.search.run import GO_ON_AFTER_THE_OTHER  # (another controller of it runs)

    return text.replace(
        GO_ON_AFTER_THE_OTHER,
        "then run the pipeline again: its search step goes on with that search",
    )


def shown_source(source: str) -> str:
    """A dataset's source as a step's log says it: a folder's file:// URI (as MLflow has it)
    as its path (it read file:///tmp/donn%C3%A9es%20dir), anything else as it is."""
    if not source.startswith("file://"):
        return source
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(source).path)


def fingerprint(experiment: Experiment, manifest_path: str) -> dict[str, str]:
    """The dataset's digest and manifest; opens the pipeline's MLflow run (one per pipeline)."""
    from leanfit.data.sources import dropped_notice, load_dataset, skipped_files, skipped_notice
    from leanfit.track.pipeline import start_pipeline_run

    dataset = load_dataset(experiment)
    manifest = {
        "digest": dataset.digest,
        "source": dataset.source,
        "images": len(dataset.labels),
        "classes": dataset.classes,
        "per_class": [int((dataset.labels == c).sum()) for c in range(dataset.num_classes)],
        "skipped": [{"file": f, "why": why} for f, why in dataset.skipped],
    }
    _write_json(Path(manifest_path), manifest)
    key = pipeline_key(experiment, dataset.digest)
    run_id = start_pipeline_run(experiment, dataset, key)
    _log(
        f"dataset {shown_source(dataset.source)}: {len(dataset.labels):,} images, "
        f"{dataset.num_classes} classes, digest {dataset.digest[:12]}; "
        f"{skipped_files(dataset.skipped)} skipped"
    )
    if dataset.skipped:  # the first 20 (the count is said above), and how many more
        for line in skipped_notice(dataset.skipped, shown=20).splitlines()[1:]:
            _log(line)
    if dropped := dropped_notice(dataset):
        _log(dropped)
    return {"digest": dataset.digest, "pipeline_run_id": run_id}


# ---------------------------------------------------------------- 2. subset


def subset(experiment: Experiment, manifest_path: str, plan_path: str) -> dict[str, int]:
    """Stratified, seeded splits, and the search's low-fidelity share of the training split."""
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import data_plan

    dataset = load_dataset(experiment)
    _check_digest(dataset.digest, manifest_path)
    plan = data_plan(experiment, dataset)
    plan.save(plan_path)
    counts = {
        "train": len(plan.splits.train),
        "val": len(plan.splits.val),
        "test": len(plan.splits.test),
        "search": len(plan.search),
    }
    _log("splits: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return counts


def _check_digest(digest: str, manifest_path: str) -> None:
    expected = json.loads(Path(manifest_path).read_text())["digest"]
    if digest != expected:
        raise LeanfitError(
            f"dataset: its digest is now {digest[:12]}, but the fingerprint step saw "
            f"{expected[:12]}; the data changed while the pipeline ran: run it again"
        )


# ---------------------------------------------------------------- 3. augment policy


def augment_policy(experiment: Experiment, plan_path: str, policy_path: str) -> dict[str, Any]:
    """The file's policy, or the best RandAugment (N, M) for a small proxy model on the subset."""
    settings = experiment.pipeline.augment_policy
    if settings.mode == "fixed":
        policy = {"mode": "fixed", "augment": experiment.training.augment}
        _write_json(Path(policy_path), policy)
        _log(f"augment policy: the file's own ({experiment.training.augment})")
        return policy
    policy = search_randaugment(experiment, plan_path)
    _write_json(Path(policy_path), policy)
    return policy


def search_randaugment(experiment: Experiment, plan_path: str) -> dict[str, Any]:
    """Each (N, M) of the grid on one proxy model, a few epochs each on the search subset."""
    from leanfit.config import HYPERPARAMETER_DEFAULTS
    from leanfit.data.sources import load_dataset
    from leanfit.data.splits import DataPlan
    from leanfit.train.trainer import Budget, train
    from leanfit.train.trial import train_data

    settings = experiment.pipeline.augment_policy
    dataset = load_dataset(experiment)
    data = train_data(experiment, dataset, for_search=True, plan=DataPlan.load(plan_path))
    proxy = proxy_configuration(experiment, dataset.channels, dataset.num_classes)
    hp = {**HYPERPARAMETER_DEFAULTS, **experiment.hyperparameters(proxy)}
    training = experiment.training.model_copy(update={"augment": "randaugment"})
    grid = sorted({(n, 0 if n == 0 else m) for n in settings.n for m in settings.m})
    scores = []
    for n, m in grid:
        result = train(
            proxy,
            {**hp, "randaugment_n": n, "randaugment_m": m},
            data,
            Budget(settings.epochs),
            training,
            seed=experiment.strategy.seed,
        )
        acc = result.val_accuracy if result.status == "ok" else 0.0
        scores.append({"n": n, "m": m, "val_accuracy": acc})
        _log(f"augment policy: RandAugment N={n} M={m}: val accuracy {acc:.4f}")
    best = max(scores, key=lambda s: (s["val_accuracy"], -s["n"], -s["m"]))
    _log(f"augment policy: RandAugment N={best['n']} M={best['m']}")
    return {
        "mode": "search",
        "augment": "randaugment",
        "n": best["n"],
        "m": best["m"],
        "proxy": proxy,
        "scores": scores,
    }


def proxy_configuration(experiment: Experiment, channels: int, num_classes: int) -> dict:
    """A configuration of the space near `proxy_params` parameters, the same on every run."""
    import math

    from leanfit.models.cost import architecture_cost

    space = experiment.search_space()
    target = math.log10(experiment.pipeline.augment_policy.proxy_params)
    size = experiment.dataset.image_size
    best, best_gap = None, math.inf
    for seed in range(64):
        config = space.sample(seed)
        params, _ = architecture_cost(config, channels, size, num_classes)
        gap = abs(math.log10(max(params, 1)) - target)
        if gap < best_gap:
            best, best_gap = config, gap
    return best


def apply_policy(experiment: Experiment, policy: Mapping[str, Any]) -> Experiment:
    """The experiment with a searched policy fixed in it (N and M no longer searched)."""
    if policy.get("mode") != "search":
        return experiment
    data = experiment.model_dump(mode="json")
    data["training"]["augment"] = "randaugment"
    hps = data["space"]["hyperparameters"]
    hps["randaugment_n"] = policy["n"]
    hps["randaugment_m"] = policy["m"]
    return experiment_from_dict(data, experiment.base_dir)


def _with_policy(experiment: Experiment, policy_path: str) -> Experiment:
    return apply_policy(experiment, json.loads(Path(policy_path).read_text()))


# ---------------------------------------------------------------- 4. search


def search(
    experiment: Experiment,
    plan_path: str,
    policy_path: str,
    pipeline_run_id: str,
    front_path: str,
    report_path: str,
) -> dict[str, float]:
    """The search, resumed if an earlier run of it was cut short, reused if it finished."""
    if experiment.executor.kind == "local":
        from leanfit.execute.forkserver import start_fork_server

        start_fork_server()  # it imports torch for the workers while this step imports the rest

    from leanfit.search.run import failure_lines, front_table, run_search
    from leanfit.track.search import TAG_FILE_KEY, TAG_POLICY, search_key

    policy = json.loads(Path(policy_path).read_text())
    exp = apply_policy(experiment, policy)
    # `leanfit report FILE` finds this search by the file's key, and fixes the policy in it again
    tags = {TAG_FILE_KEY: search_key(experiment, None)}
    if exp is not experiment:
        tags[TAG_POLICY] = json.dumps({"mode": "search", "n": policy["n"], "m": policy["m"]})
    last = [0.0]

    def progress(controller) -> None:  # a line every 15 s: a log, not a terminal
        if time.monotonic() - last[0] < 15:
            return
        last[0] = time.monotonic()
        s, best = controller.stats, controller.best_accuracy()
        stopped = f", curve-stopped {s.curve_stopped}" if controller.curve_stop else ""
        _log(
            f"search: trials {len(controller.trials)}, jobs finished {s.jobs_done}, failed "
            f"{s.jobs_failed}{stopped}, best val acc {'-' if best is None else f'{best:.4f}'}, "
            f"Pareto {len(controller.front())}, "
            f"budget left {controller.budget_left_text()}"
        )

    from leanfit.search.controller import SearchFailed

    try:
        outcome = run_search(
            exp,
            resume="auto",
            on_progress=progress,
            plan_file=plan_path,
            parent_run_id=pipeline_run_id,
            reuse_finished=True,
            tags=tags,
            # few steps an epoch, a small validation split, a search going on, failing jobs
            on_notice=lambda text: _log(in_pipeline_words(text)),
        )
    except SearchFailed as e:
        raise SearchFailed(in_pipeline_words(str(e))) from None
    except LeanfitError as e:
        if type(e) is not LeanfitError:  # (its subclasses name a field: said as they are)
            raise
        raise LeanfitError(in_pipeline_words(str(e))) from None
    controller = outcome.controller
    # which search this pipeline run's models came from: a finished search, read back or given
    # more, stays nested under the pipeline run that started it
    from mlflow import MlflowClient

    MlflowClient(exp.tracking_uri()).set_tag(pipeline_run_id, TAG_SEARCH_RUN, outcome.search_run_id)
    front = [
        {**row, "config": controller.trials[row["trial"]].config} for row in front_table(controller)
    ]
    _write_json(Path(front_path), {"search_run_id": outcome.search_run_id, "front": front})
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(outcome.report_html, report_path)
    if outcome.reused:
        _log(f"search: reused the finished search {outcome.search_run_id} (same settings, data)")
    models = f"{len(front)} model{'' if len(front) == 1 else 's'}"
    _log(f"search: {len(controller.trials)} trials, {models} on the Pareto front")
    for line in failure_lines(controller):
        _log(f"search: {line}")
    deleted, size = controller.stats.pruned
    if deleted:
        _log(
            f"search: the Pareto models' checkpoints kept, {deleted:,} "
            f"other{'s' * (deleted != 1)} deleted "
            f"({size / 2**20:.1f} MiB)"
        )
    best = controller.best_accuracy()
    return {
        "trials": float(len(controller.trials)),
        "pareto_models": float(len(front)),
        "hypervolume": float(controller.hypervolume()),
        "best_val_accuracy": float(best) if best is not None else 0.0,
    }


# ---------------------------------------------------------------- 5. final train


# A finalist's validation error is at most this many times the best finalist's: the front's
# tiniest models (a hundred parameters at 60%) are not worth a final training.
FINALIST_ERROR_RATIO = 5.0


def choose_finalists(
    front: list[dict], k: int, max_params: int | None, validation_images: int | None = None
) -> list[dict]:
    """The most accurate front model within the budget, then others spread over log10 params,
    among those whose error is at most `FINALIST_ERROR_RATIO` times the best's, of different
    sizes. The best's error counts as at least one of `validation_images` wrong: a model with
    none wrong on a few hundred images is lucky as often as better, and a bound of 5 x 0 left
    it the only finalist."""
    import math

    pool = [m for m in front if max_params is None or m["params"] <= max_params]
    if not pool:
        return []
    best = max(pool, key=lambda m: (m["val_accuracy"], -m["params"]))
    best_error = 1.0 - best["val_accuracy"]
    if validation_images:
        best_error = max(best_error, 1.0 / validation_images)
    worst_error = FINALIST_ERROR_RATIO * best_error
    rest = sorted(
        (
            m
            for m in pool
            if m is not best
            and m["params"] != best["params"]
            and 1.0 - m["val_accuracy"] <= worst_error + 1e-12
        ),
        key=lambda m: (m["params"], -m["val_accuracy"]),
    )
    # one model a size, its most accurate (the same architecture with other hyperparameters)
    rest = [m for i, m in enumerate(rest) if i == 0 or m["params"] != rest[i - 1]["params"]]
    chosen = [best]
    if k > 1 and rest:
        lo, hi = math.log10(rest[0]["params"]), math.log10(rest[-1]["params"])
        for i in range(min(k - 1, len(rest))):
            target = lo + (hi - lo) * (i / max(1, min(k - 1, len(rest)) - 1))
            pick = min(
                (m for m in rest if m not in chosen),
                key=lambda m: abs(math.log10(m["params"]) - target),
            )
            chosen.append(pick)
    return sorted(chosen, key=lambda m: m["params"])


def registered_pick(summaries: Sequence[Mapping[str, Any]], max_params: int | None) -> int | None:
    """Which final model is registered: the most accurate on the validation split within
    `max_params` (the fewer parameters on a tie), or None where none fits. The test split judges
    the choice; it never makes it. The final training refits this one (`pipeline.refit`)."""
    eligible = [
        i for i, s in enumerate(summaries) if max_params is None or s["params"] <= max_params
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda i: (summaries[i]["val_accuracy"], -summaries[i]["params"]))


def final_train(
    experiment: Experiment, plan_path: str, policy_path: str, front_path: str, models_dir: str
) -> dict[str, float]:
    """The top-k Pareto configurations, trained at the full budget on the whole training split;
    with `pipeline.refit`, the one to be registered then again on training + validation."""
    from leanfit.data.sources import load_dataset
    from leanfit.data.splits import DataPlan
    from leanfit.train.trial import TeacherSpec, TrialSpec, train_data

    exp = _with_policy(experiment, policy_path)
    front = json.loads(Path(front_path).read_text())["front"]
    plan = DataPlan.load(plan_path)
    finalists = choose_finalists(
        front, exp.pipeline.final_top_k, exp.objectives.max_params, len(plan.splits.val)
    )
    if not finalists:
        raise LeanfitError(
            "objectives.max_params: no model of the search's Pareto front fits the parameter "
            "budget; raise max_params or give the search more time (budget.wall_time)"
        )
    dataset = load_dataset(exp)
    data = train_data(exp, dataset, for_search=False, plan=plan)
    # pipeline.refit: the finalist the next step will register is trained again on the training
    # and validation splits together, once scored on the validation split (that first figure is
    # its held-out one, the one that chose it)
    refit_data = refit_train_data(dataset, plan) if exp.pipeline.refit else None
    epochs = exp.pipeline.final_epochs or exp.budget.max_epochs
    out = Path(models_dir)
    out.mkdir(parents=True, exist_ok=True)
    # With pipeline.distill, the most accurate finalist (on the search's validation) is trained
    # first, as it would be without, and teaches the others.
    distill = exp.pipeline.distill if len(finalists) > 1 else None
    teacher_index = max(
        range(len(finalists)),
        key=lambda i: (finalists[i]["val_accuracy"], -finalists[i]["params"]),
    )
    order = [teacher_index] + [i for i in range(len(finalists)) if i != teacher_index]
    taught: dict[str, Any] | None = None  # the teacher, as its students record it
    teacher: TeacherSpec | None = None
    trained: dict[int, dict] = {}
    first: dict[int, tuple[TrialSpec, dict[str, Any] | None]] = {}  # how each was trained
    for n, i in enumerate(order):
        finalist = finalists[i]
        folder = out / f"model-{i}"
        seed = exp.strategy.seed + 1000 + i
        # Kept in the work folder, under a key of everything the training depends on, so that a
        # pipeline run cut short here (a long final training on a GPU: hours) goes on from its
        # last checkpoint when it is run again, and a finished model is not trained twice.
        kept = final_training_folder(
            exp, finalist["config"], epochs, seed, plan_path, taught=taught
        )
        if taught is None and not (kept / "summary.json").is_file():
            # trained by a version before, whose folders were named otherwise and not by how
            # the files are decoded: taken only where it was trained on images of this size
            # and channel count (another image_size trained another network on other pixels)
            for older in (
                final_training_folder(exp, finalist["config"], epochs, seed, plan_path, True),
                final_training_folder(
                    exp, finalist["config"], epochs, seed, plan_path, decoding=False
                ),
            ):
                if (older / "summary.json").is_file() and _trained_on(older, data):
                    kept = older
                    break
        spec = TrialSpec(
            trial_id=f"final-{finalist['trial']}",
            config=finalist["config"],
            epochs=epochs,
            seed=seed,
            checkpoint_to=str(kept / "checkpoint.pt"),
            teacher=teacher,
        )
        _log(
            f"final training {n + 1}/{len(finalists)}: trial {finalist['trial']}, "
            f"{finalist['params']:,} parameters, {epochs} epochs on {len(data.train_y):,} images"
            + (
                f", taught by trial {taught['trial']} ({taught['params']:,} parameters)"
                if taught
                else ", the teacher of the others"
                if distill and n == 0
                else ", untaught (its teacher failed)"
                if distill
                else ""
            )
        )
        if (kept / "summary.json").is_file():
            summary = json.loads((kept / "summary.json").read_text())
            # (the same configuration may be another trial of another search)
            summary.update(trial=finalist["trial"], search_val_accuracy=finalist["val_accuracy"])
            _log(
                f"  trained by an earlier run of this pipeline (kept in {kept}): "
                f"val accuracy {summary['val_accuracy']:.4f}"
            )
        else:
            summary = _train_finalist(exp, spec, data, finalist, kept, taught)
            if summary is None:
                if distill and n == 0:
                    _log("  the teacher failed: the other finalists train without it")
                continue
        first[i] = (spec, taught)
        if distill and n == 0:
            taught = {
                "trial": finalist["trial"],
                "params": summary["params"],
                "val_accuracy": summary["val_accuracy"],
                "folder": kept.name,  # its training's key: a retrained teacher is another
                "alpha": distill.alpha,
                "temperature": distill.temperature,
            }
            teacher = TeacherSpec(checkpoint=str(kept / "checkpoint.pt"), **distill.model_dump())
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept / "checkpoint.pt", folder / "checkpoint.pt")
        _write_json(folder / "summary.json", summary)
        trained[i] = summary
    if not trained:
        raise LeanfitError("final training: every finalist failed; see the step's log")
    indices = sorted(trained)  # as the next step reads them: model-0, model-1, ...
    chosen = (
        registered_pick([trained[i] for i in indices], exp.objectives.max_params)
        if exp.pipeline.refit
        else None
    )
    if chosen is not None:
        i = indices[chosen]
        finalist, summary, (spec, taught) = finalists[i], trained[i], first[i]
        _log(
            f"refit: trial {finalist['trial']} ({summary['params']:,} parameters, validation "
            f"accuracy {summary['val_accuracy']:.4f}), the model the next step registers (the "
            "most accurate on validation within max_params)"
            + ("; the other finalists keep their weights" if len(trained) > 1 else "")
        )
        # taught as its first training was (not by itself, if it taught the others)
        refit = _refit_finalist(exp, spec, refit_data, finalist, plan_path, taught)
        if refit is not None:
            trained[i] = {**summary, "refit": refit}
            shutil.copyfile(refit["checkpoint"], out / f"model-{i}" / "checkpoint.pt")
            _write_json(out / f"model-{i}" / "summary.json", trained[i])
    return {
        "models": float(len(trained)),
        "best_val_accuracy": max(t["val_accuracy"] for t in trained.values()),
    }


# A line of a final training's progress at most this often (seconds)
FINAL_PROGRESS_SECONDS = 15.0


def refit_train_data(dataset, plan):
    """The training and validation splits together, for `pipeline.refit`. The trainer's
    held-out images are the validation split, which it now trains on: its figure there is not a
    held-out one and chooses nothing (the test split stays out of training altogether)."""
    import numpy as np

    from leanfit.train.trainer import TrainData

    both = np.concatenate([plan.splits.train, plan.splits.val])
    return TrainData(
        dataset.images[both],
        dataset.labels[both],
        dataset.images[plan.splits.val],
        dataset.labels[plan.splits.val],
        dataset.num_classes,
    )


def _refit_finalist(
    exp: Experiment,
    spec,
    data,
    finalist: Mapping[str, Any],
    plan_path: str,
    taught: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """`pipeline.refit`: the finalist trained again, with the same seed, length and teacher, on
    the training and validation splits (`data`), kept in a folder of its own (resumed and not
    trained twice, as the first training). What its summary records of it, or None if it failed
    (the first training's weights are then the model)."""
    config, epochs, seed = finalist["config"], spec.epochs, spec.seed
    kept = final_training_folder(exp, config, epochs, seed, plan_path, taught=taught, refit=True)
    _log(f"  refit on the training and validation splits: {len(data.train_y):,} images")
    if (kept / "summary.json").is_file():
        _log(f"  refit by an earlier run of this pipeline (kept in {kept})")
        done = json.loads((kept / "summary.json").read_text())
    else:
        refit_spec = spec.model_copy(update={"checkpoint_to": str(kept / "checkpoint.pt")})
        done = _train_finalist(exp, refit_spec, data, finalist, kept, taught, refit=True)
        if done is None:
            _log("  the refit failed: the weights trained on the training split are kept")
            return None
    return {
        "images": len(data.train_y),
        "wall_time": done["wall_time"],
        "folder": kept.name,
        "checkpoint": str(kept / "checkpoint.pt"),
    }


def final_training_folder(
    experiment: Experiment,
    config: Mapping[str, Any],
    epochs: int,
    seed: int,
    plan_path: str,
    legacy: bool = False,
    taught: Mapping[str, Any] | None = None,
    refit: bool = False,
    decoding: bool = True,
) -> Path:
    """Where a final training keeps its checkpoint and summary: one folder per configuration,
    length, seed, training settings, augment policy, data plan (the splits' digest) and how
    the files are decoded (image size, channels, fit, background: the plan, keyed by the files'
    contents, stays the same when they change), and its teacher when distilled (`taught`: the
    teacher's own folder, alpha and temperature), and whether it trains on the validation split
    too (`refit`). `legacy`: the folder versions before used (`key_settings`); `decoding=False`:
    the folder before the decoding was part of it."""
    import hashlib

    from leanfit.track.search import key_settings

    key = {
        "config": dict(config),
        "hyperparameters": experiment.hyperparameters(config),
        "epochs": epochs,
        "seed": seed,
        "training": key_settings(experiment.training, None, legacy),
        "plan": hashlib.sha256(Path(plan_path).read_bytes()).hexdigest(),
    }
    if decoding and not legacy:
        ds = experiment.dataset
        key["decoding"] = {
            "image_size": ds.image_size, "channels": ds.channels, "fit": ds.fit,
            "background": ds.background,
        }  # fmt: skip
    if taught is not None:  # (absent otherwise: the folders of plain trainings keep their names)
        key["teacher"] = {k: taught[k] for k in ("folder", "alpha", "temperature")}
    if refit:
        key["train_on"] = "train+val"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return experiment.work_path() / "final" / digest[:16]


def _trained_on(kept: Path, data) -> bool:
    """Whether the final training kept in `kept` trained on images of `data`'s size and
    channel count (its checkpoint says; False where it cannot be read)."""
    from leanfit.train.checkpoint import load_checkpoint

    try:
        state = load_checkpoint(kept / "checkpoint.pt", map_location="cpu")
        size, channels = int(state["image_size"]), len(state["normalize"]["mean"])
    except Exception:  # noqa: BLE001 - any unreadable checkpoint: trained again
        return False
    return (size, channels) == (data.image_size, data.channels)


def _train_finalist(
    exp: Experiment,
    spec,
    data,
    finalist: Mapping[str, Any],
    kept: Path,
    taught: Mapping[str, Any] | None = None,
    refit: bool = False,
) -> dict[str, Any] | None:
    """Train one finalist into `kept` (from its last checkpoint there, if an earlier run was cut
    short); its summary, or None when it failed. `refit`: `data` holds the validation split
    among its training images, so the progress lines say "fit", not "val"."""
    from leanfit.train.checkpoint import load_checkpoint
    from leanfit.train.trial import run_trial

    checkpoint = kept / "checkpoint.pt"
    if checkpoint.is_file():
        done = int(load_checkpoint(checkpoint, map_location="cpu")["epoch"])
        spec = spec.model_copy(update={"resume_from": str(checkpoint)})
        _log(f"  resuming at epoch {done + 1} of {spec.epochs}: an earlier run was cut short")
    shown = [time.monotonic()]
    scored = "fit" if refit else "val"

    def progress(record: Mapping[str, float]) -> None:
        if time.monotonic() - shown[0] >= FINAL_PROGRESS_SECONDS:
            shown[0] = time.monotonic()
            _log(
                f"  epoch {int(record['epoch'])}/{spec.epochs}: {scored} accuracy "
                f"{record['val_accuracy']:.4f}, train loss {record['train_loss']:.3f}"
            )

    result = run_trial(exp, spec, data, on_epoch=progress, save_progress=True)
    if result.status != "ok":
        _log(f"  failed: {result.reason}")
        return None
    summary = {
        "trial": finalist["trial"],
        "config": finalist["config"],
        "params": result.params,
        "macs": result.macs,
        "val_accuracy": result.val_accuracy,
        "search_val_accuracy": finalist["val_accuracy"],
        "epochs": spec.epochs,
        "seed": spec.seed,
        "wall_time": result.wall_time,
        "history": result.history,
    }
    if taught is not None:
        summary["distilled_from"] = dict(taught)
    if refit:  # its figure on images it trained on is no held-out figure
        summary["fit_accuracy"] = summary.pop("val_accuracy")
    _write_json(kept / "summary.json", summary)
    _log(f"  {scored} accuracy {result.val_accuracy:.4f} in {result.wall_time:.1f} s")
    return summary


# ---------------------------------------------------------------- 6. evaluate & register


def evaluate_register(
    experiment: Experiment,
    plan_path: str,
    policy_path: str,
    models_dir: str,
    front_path: str,
    pipeline_run_id: str,
    report_path: str,
) -> dict[str, Any]:
    """Test metrics of each final model; the best within budget becomes `challenger`, and
    `champion` only if it beats the current champion on the same test data."""
    import numpy as np

    from leanfit.data.sources import load_dataset
    from leanfit.data.splits import DataPlan
    from leanfit.models.deploy import load_classifier
    from leanfit.report.confusion import confusion_matrix, matrix_accuracy, plot_confusion
    from leanfit.track.pipeline import finish_pipeline_run
    from leanfit.track.registry import Registry

    exp = _with_policy(experiment, policy_path)
    dataset = load_dataset(exp)
    plan = DataPlan.load(plan_path)
    plan.check(dataset.digest)
    test_x, test_y = dataset.images[plan.splits.test], dataset.labels[plan.splits.test]
    models, matrices = [], []
    for folder in sorted(Path(models_dir).glob("model-*")):
        summary = json.loads((folder / "summary.json").read_text())
        classifier = load_classifier(
            folder / "checkpoint.pt", dataset.channels, dataset.num_classes
        )
        # one pass over the test split: the accuracy, and the report's confusion matrix
        matrices.append(confusion_matrix(classifier, test_x, test_y, dataset.num_classes))
        summary["test_accuracy"] = matrix_accuracy(matrices[-1])
        summary["folder"] = str(folder)
        models.append((summary, classifier))
        refit = summary.get("refit")
        _log(
            f"model {folder.name}: {summary['params']:,} parameters, val "
            f"{summary['val_accuracy']:.4f}"
            + (" (before its refit)" if refit else "")
            + f", test {summary['test_accuracy']:.4f}"
            + (f" (refit on training + validation, {refit['images']:,} images)" if refit else "")
            + (
                f" (taught by trial {summary['distilled_from']['trial']})"
                if summary.get("distilled_from")
                else ""
            )
        )
    if not models:
        raise LeanfitError("evaluate: the final training step left no model")
    pick = registered_pick([s for s, _ in models], exp.objectives.max_params)
    if pick is None:  # (before anything is logged)
        raise LeanfitError(
            f"evaluate: no final model fits objectives.max_params ({exp.objectives.max_params:,}"
            " parameters); raise it, or run the pipeline again so that the final training "
            "chooses within it"
        )
    registry = Registry(exp, dataset)
    logged = [registry.log_model(s, c, pipeline_run_id, test_x[:2]) for s, c in models]
    summary, classifier = models[pick]
    # the keys of the images it trained or was chosen on, kept beside it: its pixels' and its
    # files' (which a later run with another image_size or fit still knows them by)
    seen = dataset.known_keys(np.concatenate([plan.splits.train, plan.splits.val]))
    test_files = None if dataset.file_keys is None else dataset.file_keys[plan.splits.test]
    names = [dataset.files[i] for i in plan.splits.test] if dataset.files else None
    decision = registry.register(
        logged[pick], summary, classifier, test_x, test_y, seen, test_files, names
    )
    front = json.loads(Path(front_path).read_text())
    matrix = matrices[pick]
    confusion = plot_confusion(
        matrix,
        dataset.classes,
        Path(report_path).with_name("confusion.png"),
        f"{decision.name} version {decision.version}: test split",
    )
    registry.client.log_artifact(logged[pick].run_id, str(confusion), artifact_path="report")
    write_final_report(
        exp,
        front,
        [s for s, _ in models],
        decision,
        report_path,
        (matrix, dataset.classes, confusion),
    )
    # KFP names the HTML artifact's file `report`; a browser and MLflow's artifact view show a
    # file by its extension, so the copy that is logged and printed is `report.html`
    readable = Path(report_path).with_name(FINAL_REPORT)
    shutil.copyfile(report_path, readable)
    result = {
        "registered_model": decision.name,
        "version": decision.version,
        "champion_version": decision.champion_version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "test_accuracy": summary["test_accuracy"],
        "params": summary["params"],
        "digest": dataset.digest,
        "models": [
            {
                **{k: s[k] for k in ("trial", "params", "val_accuracy", "test_accuracy")},
                "refit": bool(s.get("refit")),
            }
            for s, _ in models
        ],
        "report": str(readable.resolve()),  # (said again by a `leanfit run` that is up to date)
        "validation_images": len(plan.splits.val),  # (what chose it: said when it is few)
    }
    finish_pipeline_run(exp, pipeline_run_id, result, [readable])
    _log(decision.reason)
    return result


def write_final_report(
    experiment: Experiment, front: dict, finals: list[dict], decision, path: str, confusion=None
) -> Path:
    """The search's Pareto plot and front, with the final models' test accuracies and the
    registry's decision; with `confusion` (the registered model's matrix on the test split, the
    class names, its plot), where that model goes wrong, class by class."""
    from leanfit.report.confusion import largest_class_share, per_class, per_class_html
    from leanfit.report.pareto import ReportPoint, embedded_image, plot_pareto, write_html

    tested = {str(f["trial"]): f for f in finals}
    points = []
    for row in front["front"]:  # the search's figures, as its front was drawn by them
        final = tested.get(str(row["trial"]))
        # (the final training's validation accuracy and epochs in a row of the search's, and
        # its point on the search's front line, read as a worse search result)
        points.append(
            ReportPoint(
                row["trial"],
                row["params"],
                row["macs"],
                row["val_accuracy"],
                row["epochs"],
                row["config"],
                on_front=True,
                test_accuracy=final["test_accuracy"] if final else None,
            )
        )
    title = f"leanfit pipeline: {experiment.name}"
    epochs = " or ".join(sorted({str(f["epochs"]) for f in finals}, key=int))
    folder = Path(path).parent
    plot = plot_pareto(points, folder / "final.png", title, experiment.objectives.max_params)
    facts = {
        "registered model": f"{decision.name} version {decision.version}",
        "champion": f"version {decision.champion_version}",
        "decision": decision.reason,
        "search run": front.get("search_run_id", "-"),
        "final models": (
            f"{len(finals)}, trained again for {epochs} epochs on the whole training split; the "
            "table's test accuracy is theirs, its validation accuracy and epochs the search's"
        ),
    }
    if any(f.get("refit") for f in finals):  # pipeline.refit
        facts["refit"] = (
            "then the registered model trained again on the training and validation splits "
            "together: its test accuracy is the refit's; the other final models keep their "
            "first training"
        )
    # what chose the registered model: the final trainings' own validation accuracy (the
    # table's is the search's, lower for fewer epochs: the page showed the pick at 0.9749, its
    # run at 0.9972)
    facts["final models' validation accuracy"] = ", ".join(
        f"trial {f['trial']} {f['val_accuracy']:.4f}" for f in finals if "val_accuracy" in f
    )
    more = ""
    if confusion is not None:
        matrix, classes, image = confusion
        largest = classes[int(matrix.sum(1).argmax())]
        facts[f"test accuracy of always answering the largest class ({largest})"] = (
            f"{largest_class_share(matrix):.4f}"
        )
        more = (
            f"<h2>{html.escape(decision.name)} version {decision.version} on the test split, "
            f"class by class</h2>{per_class_html(per_class(matrix, classes))}"
            + embedded_image(image, "confusion matrix")
        )
    return write_html(points, plot, Path(path), title, facts, more)
