"""The search controller on a synthetic objective: asks, promotes, resumes, survives failures."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from leanfit.config import experiment_from_dict
from leanfit.execute.base import Executor, JobOutcome, RunnerSpec, TrialJob
from leanfit.execute.inline import InlineExecutor
from leanfit.execute.local import LocalExecutor
from leanfit.search.asha import ASHA
from leanfit.search.controller import SearchController, within_budget
from leanfit.search.factory import make_strategy
from leanfit.search.run import check_budgets_reachable, model_cost
from leanfit.train.trainer import TrainResult
from tests.support import digits_config, finished_records

EXPERIMENT = experiment_from_dict(digits_config())
SPACE = EXPERIMENT.search_space()


def synthetic(**kw) -> RunnerSpec:
    return RunnerSpec(
        "leanfit.execute.runners:synthetic_runner",
        {"experiment": EXPERIMENT.model_dump(mode="json", exclude={"base_dir"}), **kw},
    )


class Recorder(Executor):
    """Wraps an executor and keeps every job it was given and every outcome it returned."""

    def __init__(self, inner: Executor):
        self.inner, self.jobs, self.outcomes = inner, [], []

    def free_slots(self):
        return self.inner.free_slots()

    def submit(self, job):
        self.jobs.append(job)
        self.inner.submit(job)

    def wait(self, timeout=None):
        out = self.inner.wait(timeout)
        self.outcomes += out
        return out

    def running(self):
        return self.inner.running()

    def close(self):
        self.inner.close()


def controller(
    executor, tmp_path, strategy="skopt", constrained_sampling=True, fit_on="all_rungs", **kw
) -> SearchController:
    cfg = EXPERIMENT.strategy.model_copy(
        update={"name": strategy, "initial_points": 8, "fit_on": fit_on}
    )
    defaults = dict(max_trials=40, wall_time=None, objectives=EXPERIMENT.objectives)
    defaults.update(kw)
    cost = model_cost(1, 16, 10)
    feasible = within_budget(defaults["objectives"], cost) if constrained_sampling else None
    return SearchController(
        space=SPACE,
        strategy=make_strategy(SPACE, cfg, seed=1, feasible=feasible),
        scheduler=defaults.pop("scheduler", None) or ASHA(1, 9, 3),
        executor=executor,
        cost=cost,
        checkpoint_dir=tmp_path / "ck",
        seed=1,
        **defaults,
    )


@pytest.mark.parametrize("strategy", ["skopt", "random", "evolution"])
def test_search_tells_every_result_and_never_runs_a_configuration_twice(tmp_path, strategy):
    rec = Recorder(InlineExecutor(synthetic()))
    c = controller(rec, tmp_path, strategy=strategy)
    c.run()
    assert len(c.trials) == 40
    keys = Counter(t.key for t in c.trials.values())
    assert max(keys.values()) == 1, "a configuration was trained as two trials"
    assert c.stats.jobs_done == len(rec.outcomes)
    # every new trial is a rung-0 job; promotions resume from the lower rung's checkpoint
    promotions = [j for j in rec.jobs if j.rung > 0]
    assert promotions, "ASHA promoted nothing"
    for job in promotions:
        assert job.spec.resume_from and job.spec.resume_from.endswith(f"rung-{job.rung - 1}.pt")
    assert all(t.params <= 20_000 for t in c.trials.values()), "max_params is a hard budget"
    front = c.front()
    assert front and c.hypervolume() > 0
    for a in front:  # no front member is dominated by any trial
        for b in c.trials.values():
            if b.results and b is not a:
                assert not (b.params <= a.params and b.val_accuracy > a.val_accuracy)


@pytest.mark.parametrize("fit_on", ["all_rungs", "top_rung"])
def test_the_surrogate_learns_from_every_rung_or_from_the_fitted_one(tmp_path, fit_on):
    c = controller(InlineExecutor(synthetic()), tmp_path, fit_on=fit_on)
    c.run()
    c._retell()  # what the next proposal would be fitted on
    observations, seen = c.strategy.observations, c.strategy.seen
    epochs = {r.index: r.epochs for r in c.scheduler.rungs}  # ASHA(1, 9, 3): 1, 3 and 9 epochs
    fitted = c._fit_rung()
    trained = [t for t in c.trials.values() if t.results and t.failed is None]
    for trial in trained:
        if fit_on == "all_rungs":  # each at its highest rung, its budget's share as fidelity
            assert observations[trial.key].fidelity == epochs[trial.top_rung] / 9
        elif fitted in trial.results:  # all at the fitted rung
            assert observations[trial.key].fidelity == epochs[fitted] / 9
        else:  # stopped below the fitted rung: known, never fitted
            assert trial.key in seen and trial.key not in observations
    fidelities = {observations[t.key].fidelity for t in trained if t.key in observations}
    assert fidelities == ({1 / 9, 3 / 9, 1.0} if fit_on == "all_rungs" else {epochs[fitted] / 9})


def test_ehvi_proposals_learn_the_error_itself_and_alternate_with_parego(tmp_path):
    c = controller(InlineExecutor(synthetic()), tmp_path, ehvi_share=0.5, gap_share=0.25)
    modes = []
    ask = c.strategy.ask

    def recorded(n=1):
        s = c.strategy
        modes.append("gap" if s.widest_gap else "ehvi" if s.frontier is not None else "parego")
        return ask(n)

    c.strategy.ask = recorded
    c.run()
    # after the initial design, every other proposal is EHVI's, and every other EHVI one is
    # made in the front's widest gap
    assert len(modes) >= 20
    ehvi = [m != "parego" for m in modes]
    assert all(a != b for a, b in zip(ehvi, ehvi[1:], strict=False)), modes
    gaps = [m == "gap" for m in modes if m != "parego"]
    assert all(a != b for a, b in zip(gaps, gaps[1:], strict=False)), modes

    c._retell(ehvi=True)
    observations = c.strategy.observations
    trained = [t for t in c.trials.values() if t.results and t.failed is None]
    assert len(trained) >= 30
    for trial in trained:  # the validation error at its highest rung (log10), not a scalar
        accuracy = trial.results[trial.top_rung]["val_accuracy"]
        assert observations[trial.key].value == pytest.approx(math.log10(max(1e-3, 1 - accuracy)))
    # the size EHVI measures: log10 parameters, within [2, log10 max_params]
    frontier = c.strategy.frontier
    assert frontier.reference == (pytest.approx(math.log10(20_000)), 0.0)  # log10 of 100% error
    for trial in trained[:5]:
        assert frontier.size_of(trial.config) == pytest.approx(math.log10(trial.params))
    c._retell(ehvi=False)  # a ParEGO proposal: scalars again, and no frontier
    assert c.strategy.frontier is None
    assert any(
        observations[t.key].value
        != pytest.approx(math.log10(max(1e-3, 1 - t.results[t.top_rung]["val_accuracy"])))
        for t in trained
    )


@pytest.mark.parametrize("constrained_sampling", [True, False])
def test_nothing_over_the_parameter_budget_is_trained(tmp_path, constrained_sampling):
    """With the budget as the strategy's constraint, proposals are feasible from the start;
    without it, infeasible proposals are told (not trained) and the strategy asks again."""
    objectives = EXPERIMENT.objectives.model_copy(update={"max_params": 3000})
    rec = Recorder(InlineExecutor(synthetic()))
    c = controller(
        rec, tmp_path, "random", constrained_sampling, objectives=objectives, max_trials=15
    )
    c.run()
    assert len(c.trials) == 15
    assert all(t.params <= 3000 for t in c.trials.values())
    assert all(c.cost(j.spec.config)[0] <= 3000 for j in rec.jobs)
    assert (c.stats.infeasible > 0) == (not constrained_sampling)


@pytest.mark.parametrize("strategy", ["skopt", "random", "evolution"])
def test_a_budget_near_the_spaces_smallest_models_is_searched_not_refused(tmp_path, strategy):
    """At max_params 400 about one random configuration in a thousand fits (the digits space's
    smallest has 94 parameters): the search was refused ("none of 1,000 random configurations"),
    or, at 600, ended part-way with that error after trials had trained. Draws are shrunk into
    the budget one parameter at a time, so every strategy searches there."""
    objectives = EXPERIMENT.objectives.model_copy(update={"max_params": 400})
    cost = model_cost(1, 16, 10)
    rng = random.Random(0)
    assert sum(cost(SPACE.sample(rng))[0] <= 400 for _ in range(1000)) <= 3  # (as said)
    experiment = EXPERIMENT.model_copy(update={"objectives": objectives})
    check_budgets_reachable(experiment, SPACE, cost)  # (it raised)
    rec = Recorder(InlineExecutor(synthetic()))
    c = controller(rec, tmp_path, strategy, objectives=objectives, max_trials=30)
    c.run()
    assert len(c.trials) == 30 and c.stats.exhausted is None
    assert all(t.params <= 400 for t in c.trials.values())
    assert len({t.key for t in c.trials.values()}) == 30
    # (the shrunk models keep their random hyper-parameters: they are not one model)
    assert len({t.config["lr"] for t in c.trials.values()}) > 20


@pytest.mark.parametrize("fit_on", ["all_rungs", "top_rung"])
def test_evolution_under_asha_mutates_once_its_population_is_full(tmp_path, fit_on):
    """Each trial joins the population at its highest rung (`fit_on: all_rungs`): fitted on
    the highest rung with enough results, every trial stopped lower left it whenever that rung
    moved up, and about half the proposals of an ASHA search were random samples refilling it."""
    c = controller(
        InlineExecutor(synthetic()), tmp_path, "evolution", fit_on=fit_on, max_trials=150
    )
    evolution = c.strategy
    sizes = []
    ask = evolution.ask
    evolution.ask = lambda n=1: sizes.append(len(evolution.population)) or ask(n)
    c.run()
    full = sizes.index(evolution.population_size)
    refilling = sum(size < evolution.population_size for size in sizes[full:])
    if fit_on == "all_rungs":
        assert refilling == 0, sizes
    else:  # (BOHB's rule, still there to choose)
        assert refilling > 10, sizes


def test_a_hyperband_search_with_a_bracket_this_version_does_not_run_is_not_resumed(tmp_path):
    """(Before, digits' 1-to-10 epochs had a bracket starting at rung 2, 9 epochs.)"""
    from dataclasses import replace

    from leanfit.errors import LeanfitError
    from leanfit.search.hyperband import Hyperband

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=6)
    first.run()
    records = [replace(r, bracket=2) for r in finished_records(first)]
    second = controller(InlineExecutor(synthetic()), tmp_path, scheduler=Hyperband(1, 10, 3))
    with pytest.raises(LeanfitError, match="bracket.s. starting at rung 2, which this version"):
        second.restore(records)
    assert not second.trials  # (refused before anything was restored)


def test_a_checkpoint_path_read_back_from_mlflow_names_only_a_trials_checkpoint(tmp_path):
    """A trial run's `leanfit.checkpoint` tag edited to name another file (anyone who can write
    to the tracking server can): a resumed search deleted it as a superseded checkpoint (QA: 61
    of a folder's 65 files) and would have loaded it to resume from. Only files named as the
    controller names checkpoints are taken."""
    from dataclasses import replace

    first = controller(InlineExecutor(synthetic()), tmp_path / "a", max_trials=6)
    first.run()
    victims = tmp_path / "victim"
    victims.mkdir()
    records = []
    for i, rec in enumerate(finished_records(first)):
        (victims / f"precious-{i}.txt").write_text("keep me")
        records.append(replace(rec, checkpoint=str(victims / f"precious-{i}.txt")))
    second = controller(InlineExecutor(synthetic()), tmp_path / "b", max_trials=8)
    second.restore(records)
    assert all(not t.checkpoints for t in second.trials.values())
    second.prune_checkpoints(set())
    second.run()
    assert len(list(victims.iterdir())) == len(records)


def flaky_runner():
    """A fifth of the trials return NaN; a few others crash their worker once."""
    import os

    inner = synthetic().build()

    def run(spec):
        n = int(spec.trial_id.split("-")[1])
        if n % 5 == 0:
            return TrainResult("failed", reason="loss became nan in epoch 1")
        if (
            n % 7 == 3
            and spec.resume_from is None
            and not os.path.exists(f"{spec.checkpoint_to}.x")
        ):
            open(f"{spec.checkpoint_to}.x", "w").close()
            os._exit(137)  # killed once, as by the out-of-memory killer
        return inner(spec)

    return run


def test_a_search_where_trials_crash_or_return_nan_finishes_and_records_them(tmp_path):
    rec_spec = RunnerSpec("tests.test_controller:flaky_runner")
    with LocalExecutor(rec_spec, workers=2, trial_timeout=60) as ex:
        rec = Recorder(ex)
        c = controller(rec, tmp_path, max_trials=25)
        notices: list[str] = []  # what the user would have been told
        c.on_notice = notices.append
        c.run()
    failed = [t for t in c.trials.values() if t.failed]
    assert len(failed) == 5 and all("nan" in t.failed for t in failed)
    assert notices == []  # a fifth failing is no news beyond the failed count
    assert c.stats.retries >= 3  # trials 3, 10, 17, 24 crashed once each, then ran again
    crashed = [o for o in rec.outcomes if o.infrastructure_failure]
    for o in crashed:
        tid = int(o.job.spec.trial_id.split("-")[1])
        assert c.trials[tid].results, f"trial {tid} was not retried after its worker died"


def failing_when_promoted_runner():
    """Every trial trains at its first rung; its promotion's loss becomes NaN."""
    inner = synthetic().build()

    def run(spec):
        if not spec.trial_id.endswith("rung-0"):
            return TrainResult("failed", reason="loss became nan in epoch 4")
        return inner(spec)

    return run


def test_a_trial_that_fails_when_promoted_is_no_front_model_and_counts_as_failed(tmp_path):
    """Its lower rung's figures stay in its record, but it was on the front (and so a finalist
    of the pipeline) and told to the surrogate as that figure at the full budget; it is told as
    a failure at the budget it failed at, and the front is of the trials that did not fail."""
    runner = RunnerSpec("tests.test_controller:failing_when_promoted_runner")
    c = controller(InlineExecutor(runner), tmp_path, max_trials=20)
    c.run()
    failed = [t for t in c.trials.values() if t.failed is not None]
    assert failed and all(list(t.results) == [0] for t in failed)  # (its rung-0 figures kept)
    front = c.front()
    assert front and not [t for t in front if t.failed is not None]
    assert c.best_accuracy() == max(t.val_accuracy for t in c.trials.values() if not t.failed)
    c._retell()
    for trial in failed:
        told = c.strategy.observations[trial.key]
        assert told.value == math.inf and told.fidelity == c._budget_shares[1]


def mostly_failing_runner():
    """Nine trials in ten time out; the tenth is trained."""
    inner = synthetic().build()

    def run(spec):
        if int(spec.trial_id.split("-")[1]) % 10:
            return TrainResult("failed", reason="timed out after 3 s (executor.trial_timeout)")
        return inner(spec)

    return run


def test_a_search_whose_jobs_mostly_fail_says_so_once_and_goes_on(tmp_path):
    """Not every job failed, so fail_fast did not stop it: the search ran its whole budget with
    only the progress line's failed count to show (a trial_timeout only quick trials fit in)."""
    with LocalExecutor(RunnerSpec("tests.test_controller:mostly_failing_runner"), 2) as ex:
        c = controller(ex, tmp_path, max_trials=40)
        notices = []
        c.on_notice = notices.append
        c.run()
    assert len(c.trials) == 40 and 0 < c.stats.jobs_done < c.stats.jobs_failed
    assert len(notices) == 1, notices
    assert "jobs so far failed; its commonest error: " in notices[0], notices
    assert "x timed out after 3 s (executor.trial_timeout) (trial 1, 2, 3, 4, 5, ...)" in notices[0]
    assert "It goes on" in notices[0] and "--resume" in notices[0]


class EventLog:
    """Stands in for the MLflow events: the order in which jobs were logged."""

    def __init__(self):
        self.lines = []

    def job_started(self, trial, job):
        self.lines.append(("started", job.spec.trial_id))
        return f"ref-{job.spec.trial_id}"

    def job_finished(self, trial, job, outcome, ref):
        self.lines.append(("finished", job.spec.trial_id, ref))


def test_proposals_are_made_while_the_workers_train_and_every_job_is_logged(tmp_path):
    """The next configuration is proposed while both workers are busy, and the tracking store is
    written after the free worker got its next job; each job is still logged as started, then
    as finished with its own handle, exactly once."""
    events = EventLog()
    busy_at_proposal = []
    # jobs of 0.2 s and more: a proposal (about 0.1 s) fits inside one, even on a loaded machine
    with LocalExecutor(synthetic(sleep_per_epoch=0.2), workers=2) as ex:
        rec = Recorder(ex)
        c = controller(rec, tmp_path, max_trials=20, events=events)
        propose = c._propose

        def spy(index):
            busy_at_proposal.append(rec.free_slots() == 0)
            return propose(index)

        c._propose = spy
        c.run()
    assert len(c.trials) == 20 and c.stats.jobs_done == len(rec.outcomes)
    # Without proposing ahead no proposal would find both workers busy. With it, all but the
    # first two do, unless two jobs end together (the second then waits for a proposal) or a
    # proposal outlasts a job on a loaded machine: CI once saw 14 of 20 at 0.1 s an epoch.
    assert sum(busy_at_proposal) >= 10, busy_at_proposal
    jobs = [j.spec.trial_id for j in rec.jobs]
    started = [line[1] for line in events.lines if line[0] == "started"]
    finished = [line for line in events.lines if line[0] == "finished"]
    assert sorted(started) == sorted(jobs) and len(set(started)) == len(jobs)
    assert sorted(line[1] for line in finished) == sorted(o.job.spec.trial_id for o in rec.outcomes)
    for _, trial_id, ref in finished:
        assert ref == f"ref-{trial_id}"
        assert events.lines.index(("started", trial_id)) < events.lines.index(
            ("finished", trial_id, ref)
        )


class EndTogether(Executor):
    """Two workers whose jobs all end at once, reported one per `wait` (as two pipes that
    become ready together may be)."""

    def __init__(self):
        self.runner = synthetic().build()
        self.ended: list = []
        self.proposed_while_ended: list[int] = []

    def free_slots(self):
        return 2 - len(self.ended)

    def submit(self, job):
        self.ended.append(JobOutcome(job, self.runner(job.spec), worker="fake"))

    def wait(self, timeout=None):
        return [self.ended.pop(0)] if self.ended else []

    def running(self):
        return [o.job for o in self.ended]

    def close(self):
        pass


def test_workers_whose_jobs_ended_get_new_jobs_before_the_next_proposal(tmp_path):
    """A job that ends while the controller logs is served at once: no proposal is made while
    a finished job waits to be collected (a freed worker would wait for the surrogate)."""
    ex = EndTogether()
    c = controller(ex, tmp_path, max_trials=12)
    propose_ahead = c._propose_ahead

    def spy():
        ex.proposed_while_ended.append(len(ex.ended))
        propose_ahead()

    c._propose_ahead = spy
    c.run()
    assert c.stats.jobs_done >= 12
    assert ex.proposed_while_ended == [] or max(ex.proposed_while_ended) == 0


def test_wall_time_is_honoured(tmp_path):
    with LocalExecutor(synthetic(sleep_per_epoch=0.3), workers=2) as ex:
        c = controller(ex, tmp_path, max_trials=None, wall_time=6.0)
        start = time.monotonic()
        c.run()
        took = time.monotonic() - start
    assert 5.5 <= took <= 8.0
    assert c.stats.jobs_done > 4


def test_restore_rebuilds_the_state_and_reruns_only_what_was_running(tmp_path):
    from leanfit.track.search import JobRecord

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=12)
    first.run()
    records = finished_records(first)
    interrupted = next(iter(first.trials.values()))
    records.append(
        JobRecord("r", 99, 0, 0, None, SPACE.sample(123), {}, "running", {}, None, None, None, 0)
    )
    rec = Recorder(InlineExecutor(synthetic()))
    second = controller(rec, tmp_path, max_trials=14)
    assert second.restore(records) == 1
    # the counts cover the whole search (a resumed search's progress line, its report)
    assert second.stats.jobs_done == first.stats.jobs_done
    second.run()
    assert second.stats.jobs_done == first.stats.jobs_done + len(rec.outcomes)
    ran = Counter((int(j.spec.trial_id.split("-")[1]), j.rung) for j in rec.jobs)
    assert ran[(99, 0)] == 1  # the interrupted job ran again
    for t in first.trials.values():
        for rung in t.results:
            assert ran[(t.trial_id, rung)] == 0, "a finished job ran again"
    assert interrupted.trial_id in second.trials
    assert not math.isnan(second.hypervolume())


def test_a_search_two_controllers_wrote_at_once_is_refused_in_one_line(tmp_path):
    """Records of one search written by two controllers at once (one stopped past a minute
    while a --resume at another place took it over): a second result for a job, or one trial
    number with two configurations. Reading them back (`--resume`, `leanfit report`) ended in
    a ValueError's traceback, every time; now said in one line."""
    from dataclasses import replace

    from leanfit.errors import LeanfitError

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=6)
    first.run()
    records = finished_records(first)
    ok = next(r for r in records if r.status == "ok")
    other = next(
        config
        for seed in range(1000, 1100)
        if SPACE.key(config := SPACE.sample(seed)) != SPACE.key(ok.config)
    )
    for twice, says in (
        (replace(ok, run_id="theirs"), f"two results at rung {ok.rung}"),
        (replace(ok, run_id="theirs", config=other), "two configurations"),
    ):
        second = controller(InlineExecutor(synthetic()), tmp_path, max_trials=6)
        with pytest.raises(LeanfitError) as refused:
            second.restore([*records, twice])
        said = str(refused.value)
        assert f"trial {ok.trial_id} has {says} in this search's records" in said, said
        assert "two controllers wrote this search at once" in said


def test_a_controller_stopped_past_a_minute_whose_search_was_resumed_elsewhere_stops(tmp_path):
    """A controller stopped (Ctrl-Z, SIGSTOP, a laptop asleep) for over a minute, its search
    resumed meanwhile at another place: when it wakes it wrote on into the same run (76 of 131
    job runs twice, and the run unreadable after). Now, silent past `silence_check`, it reads
    where the search runs before it writes, and stops writing; one that nobody took over goes
    on."""
    from leanfit.track import TrialLogger
    from leanfit.track.search import SearchLog, SearchTakenOver

    logger = TrialLogger(f"sqlite:///{tmp_path / 'mlflow.db'}", "leanfit-x")
    run = logger.client.create_run(logger.experiment_id).info.run_id
    mine, theirs = SearchLog(logger, run), SearchLog(logger, run)
    mine.mark_place("host-a:/work/x", 0.0, 0)
    mine.log_elapsed(1.0, 1)
    theirs.mark_place("host-b:/work/y", 80.0, 0)  # a --resume at another place
    mine._heard_at -= SearchLog.silence_check  # ... while this controller was stopped
    job = (0, 0, 0, None, {"b0.type": "conv"}, {"epochs": 1}, None, None, 0, "digest")
    runs = len(logger.client.search_runs([logger.experiment_id]))
    with pytest.raises(SearchTakenOver) as stopped:
        mine.job_started(*job)
    said = str(stopped.value)
    assert f"the search {run} was resumed at host-b:/work/y while this controller" in said
    with pytest.raises(SearchTakenOver):
        mine.log_elapsed(2.0, 2)  # nothing more, once it knows
    assert len(logger.client.search_runs([logger.experiment_id])) == runs
    history = logger.client.get_metric_history(run, "search_elapsed_seconds")
    assert max(history, key=lambda m: m.timestamp).value == 80.0
    # the other, as silent, looks too, and goes on: the search is still its own
    theirs._heard_at -= SearchLog.silence_check
    theirs.job_started(*job)
    theirs.log_elapsed(81.0, 1)
    assert len(logger.client.search_runs([logger.experiment_id])) == runs + 1


def test_a_job_abandoned_at_the_budgets_end_goes_on_when_the_search_is_given_more(tmp_path):
    """A job still running when the budget ran out is abandoned. Given a larger budget, the
    search goes on with it; it was left out, and its trial number went to a new configuration,
    so MLflow held two configurations under one number and the report showed one trial with
    the size of the first (0 parameters: it never finished) and the accuracy of the other."""
    from leanfit.track.search import JobRecord

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=6)
    first.run()
    records = finished_records(first)
    cut = SPACE.sample(321)
    records.append(JobRecord("r", 6, 0, 0, None, cut, {}, "abandoned", {}, None, None, None, 0))
    rec = Recorder(InlineExecutor(synthetic()))
    second = controller(rec, tmp_path, max_trials=9)
    assert second.restore(records) == 1
    second.run()
    trained = [(j.spec.trial_id, j.spec.config) for j in rec.jobs if j.rung == 0]
    assert ("trial-00006-rung-0", second.trials[6].config) in trained
    assert second.trials[6].key == SPACE.key(cut) and second.trials[6].results
    assert sorted(second.trials) == list(range(9)), "each number one configuration"


def test_a_finished_search_keeps_the_checkpoints_of_the_jobs_its_budget_cut_short(tmp_path):
    """keep_checkpoints: front deleted every checkpoint off the front at the budget's end, the
    one an abandoned promotion resumes from too: given more, it trained from scratch."""
    from leanfit.search.run import checkpoints_kept
    from leanfit.train.trial import TrialSpec

    c = controller(InlineExecutor(synthetic()), tmp_path, max_trials=12)
    c.run()
    front = {t.trial_id for t in c.front()}
    off = [t for t in c.trials.values() if t.trial_id not in front and t.checkpoints]
    cut, other = off[0], off[1]  # a promotion of `cut` was running when the budget ended
    rung = max(cut.checkpoints)
    job = TrialJob(
        TrialSpec(trial_id=f"trial-{cut.trial_id:05d}-rung-{rung + 1}", config=cut.config,
                  epochs=9, resume_from=cut.checkpoints[rung]),
        rung=rung + 1,
    )  # fmt: skip
    keep = checkpoints_kept(c, [job])
    assert keep == front | {cut.trial_id}
    kept, gone = Path(cut.checkpoints[rung]), Path(other.checkpoints[max(other.checkpoints)])
    c.prune_checkpoints(keep)
    assert kept.is_file() and not gone.exists()


def test_a_search_whose_every_job_failed_runs_them_again_when_resumed_after_a_fix(tmp_path):
    """ "Fix that and run it again (`--resume` goes on with it)", its error said: resumed, it
    ran nothing (its trial budget was spent), and ended FINISHED with an empty front."""
    from leanfit.search.controller import SearchFailed
    from leanfit.track.search import JobRecord

    reason = "timed out after 0.1 s (executor.trial_timeout)"
    records = [
        JobRecord("r", i, 0, 0, None, SPACE.sample(100 + i), {}, "failed", {}, None, None,
                  reason, 0)
        for i in range(4)
    ]  # fmt: skip
    as_before = controller(InlineExecutor(synthetic()), tmp_path, max_trials=4)
    as_before.restore(records)  # (told to go on with its failures as they were)
    with pytest.raises(SearchFailed, match="every trial job of the search failed"):
        as_before.run()  # nothing ran: a failure still, not a FINISHED empty front
    rec = Recorder(InlineExecutor(synthetic()))
    fixed = controller(rec, tmp_path, max_trials=4)
    assert fixed.restore(records, retry_failed=True) == 4
    fixed.run()
    again = [(int(j.spec.trial_id.split("-")[1]), j.rung, j.attempt) for j in rec.jobs]
    assert again[:4] == [(i, 0, 1) for i in range(4)]  # each once, as its next attempt
    assert all(job[1:] != (0, 0) for job in again)  # (promotions followed)
    assert sorted(fixed.trials) == [0, 1, 2, 3] and fixed.front() and not fixed.stats.jobs_failed


def test_a_promotion_whose_checkpoint_is_gone_trains_from_the_start(tmp_path):
    """The work folder was cleaned to free disk, or the search resumed on another machine: the
    trials of earlier rungs are promoted all the same, trained from the start, none failed."""
    import shutil

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=12)
    first.run()
    # one checkpoint a trial, its highest rung's: the lower ones were deleted once superseded
    kept = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert kept == sorted(
        f"trial-{t.trial_id:05d}-rung-{max(t.results)}.pt" for t in first.trials.values()
    )
    assert any(max(t.results) > 0 for t in first.trials.values())
    shutil.rmtree(tmp_path / "ck")
    rec = Recorder(InlineExecutor(synthetic()))
    second = controller(rec, tmp_path, max_trials=24)
    second.restore(finished_records(first))
    second.run()
    earlier = set(first.trials)
    promoted = [j for j in rec.jobs if j.rung > 0 and int(j.spec.trial_id[6:11]) in earlier]
    assert promoted, "the second search promoted none of the first's trials"
    assert all(j.spec.resume_from is None for j in promoted)
    assert second.stats.from_scratch == len(promoted)
    assert second.stats.jobs_failed == 0 and not any(t.failed for t in second.trials.values())
    # the new trials' own promotions still inherit their weights
    assert any(j.spec.resume_from for j in rec.jobs if j.rung > 0)


def test_a_promotion_read_back_running_is_counted_from_scratch_only_once_it_runs(tmp_path):
    """`leanfit report` of a running search (a read-back, whose queued jobs never run) said
    "promotions trained from the start: 1" of a promotion whose resume point was deleted as it
    finished between the report's reads."""
    import dataclasses

    first = controller(InlineExecutor(synthetic()), tmp_path, max_trials=12)
    first.run()
    records = finished_records(first)
    top = [r for r in records if r.rung == max(first.trials[r.trial_id].results)]
    low = next(r for r in top if r.rung < max(x.rung for x in records))
    running = dataclasses.replace(
        low, rung=low.rung + 1, status="running", metrics={}, checkpoint=None,
        resume_from=str(tmp_path / "gone.pt"),
    )  # fmt: skip
    rec = Recorder(InlineExecutor(synthetic()))
    second = controller(rec, tmp_path, max_trials=12)
    assert second.restore([*records, running]) == 1
    assert second.stats.from_scratch == 0, "a read-back counted what it did not run"
    second.run()
    assert second.stats.from_scratch == 1 and rec.jobs[0].spec.resume_from is None


def test_a_lower_rungs_checkpoint_outlives_the_promotion_until_its_finish_is_logged(tmp_path):
    """A promotion's resume point (the lower rung's checkpoint) is deleted only once the
    promotion's finish is logged: between the two, a `kill -9` leaves its MLflow run RUNNING,
    and the resumed search runs it again from that checkpoint. Deleted as soon as the job
    ended, the resumed job trained from scratch, its inherited weights lost."""

    class Events:
        def __init__(self):
            self.checked = 0

        def job_started(self, trial, job):
            return None

        def job_finished(self, trial, job, outcome, ref):
            if job.spec.resume_from and outcome.result.status == "ok":
                assert Path(job.spec.resume_from).exists(), job.spec.trial_id
                self.checked += 1

    events = Events()
    c = controller(InlineExecutor(synthetic()), tmp_path, max_trials=12, events=events)
    c.run()
    assert events.checked > 0, "nothing was promoted"
    # and deleted once logged: one checkpoint a trial, its highest rung's
    kept = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert kept == sorted(
        f"trial-{t.trial_id:05d}-rung-{max(t.results)}.pt" for t in c.trials.values()
    )


def test_a_finished_search_keeps_the_pareto_models_checkpoints_and_deletes_the_rest(tmp_path):
    c = controller(InlineExecutor(synthetic()), tmp_path, max_trials=20)
    c.run()
    before = {p.name: p.stat().st_size for p in (tmp_path / "ck").iterdir()}
    front = {t.trial_id for t in c.front()}
    assert 0 < len(front) < len(before)
    files, size = c.prune_checkpoints(front)
    after = {p.name for p in (tmp_path / "ck").iterdir()}
    assert after == {Path(c.trials[t].checkpoints[max(c.trials[t].results)]).name for t in front}
    assert files == len(before) - len(after)
    assert size == sum(n for name, n in before.items() if name not in after)
    assert not any(t.checkpoints for t in c.trials.values() if t.trial_id not in front)
    assert c.prune_checkpoints(front) == (0, 0)  # nothing left to delete


def test_the_initial_design_reaches_the_small_end_of_the_front(tmp_path):
    """The space's prior rarely samples tiny models; the first trials are spread over log size."""
    prior = [c.cost(c.space.sample(s))[0] for c in [controller(None, tmp_path)] for s in range(20)]
    design = controller(InlineExecutor(synthetic()), tmp_path, "random", max_trials=20)
    design.initial_design = 20
    design.run()
    sizes = sorted(t.params for t in design.trials.values())
    assert sum(p <= 2_000 for p in sizes) >= 4
    assert sum(p <= 2_000 for p in sizes) > sum(p <= 2_000 for p in prior)
    assert max(sizes) > 8_000  # and it still covers the large end


def test_a_warm_start_tells_the_earlier_results_and_rechecks_the_best_first(tmp_path):
    from leanfit.search.controller import PriorTrial

    earlier = controller(InlineExecutor(synthetic()), tmp_path / "a", max_trials=30)
    earlier.run()
    prior = [
        PriorTrial(t.config, t.params, t.macs, t.val_accuracy)
        for t in earlier.trials.values()
        if t.results
    ]
    front_keys = {t.key for t in earlier.front()}

    rec = Recorder(InlineExecutor(synthetic(seed=5)))  # "new data": another objective seed
    warm = controller(rec, tmp_path / "b", max_trials=12)
    queued = warm.warm_start(prior, recheck=4)
    assert queued == 4
    told_before = len(warm.strategy.observations)
    warm._retell()
    assert len(warm.strategy.observations) - told_before == len(prior)  # every result told
    warm.run()
    first_four = [warm.trial_of(j).key for j in rec.jobs if j.rung == 0][:4]
    assert set(first_four) <= {SPACE.key(p.config) for p in prior}
    assert front_keys & set(first_four), "the earlier front is re-checked first"
    assert rec.jobs[0].rung == 0 and not rec.jobs[0].spec.resume_from  # fresh, lowest rung
    keys = Counter(t.key for t in warm.trials.values())
    assert max(keys.values()) == 1
    # a small trial budget is not spent on re-checks alone: at most half of it
    small = controller(InlineExecutor(synthetic(seed=5)), tmp_path / "c", max_trials=5)
    assert small.warm_start(prior, recheck=8) == 2


def test_rungs_ranked_by_pareto_promote_along_the_front_not_one_size(tmp_path):
    """Ranked by non-dominated sorting, the trials that reach the top rung spread over sizes;
    by an equal-weight scalarisation they bunch at the sizes it favours."""
    sizes = {}
    for rank in ("pareto", "scalar"):
        c = controller(InlineExecutor(synthetic()), tmp_path / rank, rung_rank=rank)
        c.run()
        trial = next(t for t in c.trials.values() if t.results and t.failed is None)
        value = c.rung_value(trial, trial.results[trial.top_rung])
        assert isinstance(value, tuple if rank == "pareto" else float)
        top = max(r.index for r in c.scheduler.rungs)
        sizes[rank] = [math.log10(t.params) for t in c.trials.values() if top in t.results]
    spread = {rank: max(s) - min(s) for rank, s in sizes.items()}
    assert spread["pareto"] > 2 * spread["scalar"], spread
    # the error comes first whatever the file's order of objectives (it breaks the ends' tie)
    targets = [{"metric": "params", "goal": "minimize"},
               {"metric": "val_accuracy", "goal": "maximize"}]  # fmt: skip
    swapped = EXPERIMENT.objectives.model_copy(
        update={"targets": [type(EXPERIMENT.objectives.targets[0])(**t) for t in targets]}
    )
    other = controller(
        InlineExecutor(synthetic()), tmp_path / "o", objectives=swapped, rung_rank="pareto"
    )
    first = controller(InlineExecutor(synthetic()), tmp_path / "f", rung_rank="pareto")
    metrics = trial.results[trial.top_rung]
    assert other.rung_value(trial, metrics) == first.rung_value(trial, metrics)
    assert other.rung_value(trial, metrics)[1] == pytest.approx(math.log10(trial.params))


def test_the_hypervolume_counts_large_models_under_a_large_budget_and_is_the_best_accuracy_alone(
    tmp_path,
):
    """Over log10 params 2 to 4.5 (the benchmarks' range), a model of 180k parameters added
    nothing, however accurate (a CIFAR-10 search's whole front scored 0): a hard budget above
    that range widens it. With accuracy the only objective, the hypervolume is the best accuracy,
    not 2.5 times it."""
    from leanfit.search.controller import Trial

    def with_trials(c: SearchController, points) -> SearchController:
        for i, (params, acc) in enumerate(points):
            c.trials[i] = Trial(i, {}, (i,), params, 0, results={0: {"val_accuracy": acc}})
        return c

    points = [(182_163, 0.65), (386_867, 0.70)]
    big = EXPERIMENT.objectives.model_copy(update={"max_params": 1_000_000})
    c = with_trials(controller(InlineExecutor(synthetic()), tmp_path, objectives=big), points)
    assert c.hypervolume_range() == (2.0, 6.0)
    by_hand = (6 - math.log10(182_163)) * 0.65 + (6 - math.log10(386_867)) * (0.70 - 0.65)
    assert c.hypervolume() == pytest.approx(by_hand)
    assert "log10 params 2-6" in c.hypervolume_label()
    # the digits budget (20k) keeps the benchmarks' range
    small = with_trials(controller(InlineExecutor(synthetic()), tmp_path), [(900, 0.9)])
    assert small.hypervolume_range() == (2.0, 4.5)
    assert small.hypervolume() == pytest.approx((4.5 - math.log10(900)) * 0.9)

    alone = EXPERIMENT.objectives.model_copy(
        update={"targets": [t for t in big.targets if t.metric == "val_accuracy"]}
    )
    one = with_trials(controller(InlineExecutor(synthetic()), tmp_path, objectives=alone), points)
    assert one.hypervolume() == pytest.approx(0.70)
    assert "best validation accuracy" in one.hypervolume_label()


def test_a_job_read_while_its_result_is_written_counts_as_running():
    """`leanfit report` of a running search read a job's `ok` status before its figures (MLflow
    reads a run's tags and metrics in two queries) and ended in KeyError: 'val_accuracy'."""
    import json

    from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag

    from leanfit.track.search import TAG_CONFIG, TAG_RUNG, TAG_STATUS, TAG_TRIAL, _record

    def run(status: str, metrics: dict) -> Run:
        info = RunInfo("r1", "0", "u", status, 1, 2 if status != "RUNNING" else None, "active")
        tags = {TAG_TRIAL: "3", TAG_RUNG: "0", TAG_CONFIG: json.dumps({"w": 8}), TAG_STATUS: "ok"}
        data = RunData(
            metrics=[Metric(k, v, 1, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        return Run(info, data)

    assert _record(run("RUNNING", {"val_accuracy": 0.9})).status == "ok"
    caught = _record(run("RUNNING", {}))  # the status tag read, the figures not yet
    assert caught.status == "running" and not caught.unclosed
    lost = _record(run("FINISHED", {}))  # closed with no figures: not a result to rank
    assert lost.status == "failed" and "no val_accuracy" in lost.reason


def test_a_searchs_controller_and_report_import_no_torch():
    """Importing torch is about 1.5 s of CPU a process: a search's controller, its local
    executor and `leanfit report` train nothing and import none (report: 3.8 s to 2.6 s here);
    the trainer and the data (the workers) do."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import leanfit.search.run, leanfit.search.readback, leanfit.execute.local, leanfit.cli\n"
        "import leanfit.models.cost, leanfit.train.result, leanfit.train.trial\n"
        "from leanfit.train import TrainResult\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    from leanfit.models import build_model  # (still there, read when asked for)
    from leanfit.train import train

    assert callable(build_model) and callable(train)
