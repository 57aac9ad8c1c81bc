"""Learning-curve stopping: the extrapolation, the trainer's stop, and a search that uses it."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from leanfit.config import experiment_from_dict
from leanfit.errors import ConfigError
from leanfit.execute.inline import InlineExecutor
from leanfit.search.asha import ASHA
from leanfit.search.controller import SearchController, within_budget
from leanfit.search.factory import make_strategy
from leanfit.search.objectives import SyntheticObjective
from leanfit.search.run import model_cost
from leanfit.train.checkpoint import load_checkpoint
from leanfit.train.curve import CURVE_MARGIN, MIN_POINTS, CurveStop, optimistic_accuracy
from leanfit.train.trainer import Budget, TrainData, train
from leanfit.train.trial import TrialSpec
from tests.support import digits_config, finished_records
from tests.test_controller import EXPERIMENT, SPACE, Recorder, synthetic


def exp3(a_max: float, tau: float, epoch: float) -> float:
    return a_max - (a_max - 0.1) * math.exp(-epoch / tau)


def pow3(a_max: float, alpha: float, epoch: float) -> float:
    return a_max - (a_max - 0.1) * epoch ** (-alpha)


def history(accuracies, first=1):
    return [{"epoch": first + i, "val_accuracy": a} for i, a in enumerate(accuracies)]


# -- the extrapolation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "curve", [lambda e: exp3(0.9, 4.0, e), lambda e: pow3(0.95, 0.8, e)], ids=["exp3", "pow3"]
)
def test_a_saturating_curve_is_predicted_from_its_first_epochs(curve):
    seen = list(range(1, 9))
    points = [curve(e) for e in seen]
    # the curves that fit best (tolerance 0: within twice the best residual) get it right ...
    assert optimistic_accuracy(seen, points, 30, tolerance=0.0) == pytest.approx(
        curve(30), abs=0.02
    )
    # ... and the prediction, the highest of those within 1% of the points, is above it
    assert curve(30) <= optimistic_accuracy(seen, points, 30) <= curve(30) + 0.1


def test_on_noisy_curves_the_prediction_is_rarely_and_never_much_too_low():
    rng = np.random.default_rng(0)
    misses, excess = 0, []
    for _ in range(300):
        family = exp3 if rng.random() < 0.5 else pow3
        a_max = rng.uniform(0.4, 0.99)
        rate = rng.uniform(0.7, 12) if family is exp3 else rng.uniform(0.2, 2.0)
        final = int(rng.choice([10, 20]))
        seen = range(1, int(rng.integers(MIN_POINTS, final)) + 1)
        noisy = [family(a_max, rate, e) + 0.005 * rng.standard_normal() for e in seen]
        predicted = optimistic_accuracy(list(seen), noisy, final)
        truth = family(a_max, rate, final)
        misses += predicted + CURVE_MARGIN < truth
        assert predicted + CURVE_MARGIN > truth - 0.02, "a curve that gets there was stopped"
        excess.append(predicted - truth)
    assert misses <= 6  # 2%
    assert np.median(excess) < 0.06, "so optimistic that it would never stop anything"


def test_a_dip_raises_the_prediction_and_never_lowers_it():
    smooth = [0.40, 0.55, 0.62, 0.66]
    dipped = [0.40, 0.55, 0.45, 0.66]  # the warm restart of a promotion
    assert optimistic_accuracy([1, 2, 3, 4], dipped, 10) >= 0.66
    assert (
        optimistic_accuracy([1, 2, 3, 4], dipped, 10)
        >= optimistic_accuracy([1, 2, 3, 4], smooth, 10) - 1e-9
    )


def test_a_hopeless_curve_is_stopped_and_a_promising_one_is_not():
    stop = CurveStop(below=0.9, epochs=20)
    flattening = history([0.50, 0.60, 0.63, 0.64])
    assert stop.reason(flattening[:2]) is None, f"fitted on fewer than {MIN_POINTS} points"
    assert "0.9000" in stop.reason(flattening)
    rising = history([exp3(0.97, 3.0, e) for e in range(1, 5)])  # 0.27 ... 0.56, ends at 0.96
    assert stop.reason(rising) is None
    assert CurveStop(below=0.66, epochs=20).reason(flattening) is None  # within reach
    # at its last epoch a run is never stopped: its accuracy there is known
    assert CurveStop(below=0.9, epochs=4).reason(flattening) is None


def test_only_the_epochs_after_first_epoch_are_fitted():
    # three epochs at a low fidelity, then the same model at the full one
    low_then_full = history([0.50, 0.60, 0.63, 0.80, 0.86, 0.88])
    assert CurveStop(below=0.9, epochs=20).reason(low_then_full[:3]) is not None
    assert CurveStop(below=0.9, epochs=20, first_epoch=3).reason(low_then_full[:5]) is None


def test_a_bad_curve_stop_is_refused():
    with pytest.raises(ValueError, match="below"):
        CurveStop(below=1.5, epochs=10)
    with pytest.raises(ValueError, match="first_epoch"):
        CurveStop(below=0.5, epochs=10, first_epoch=10)
    with pytest.raises(ValueError, match="increasing"):
        optimistic_accuracy([1, 1, 2], [0.1, 0.2, 0.3], 10)


# -- the trainer and the trial spec ---------------------------------------------------------


def test_the_trainer_stops_a_hopeless_run_keeps_its_result_and_resumes_from_it(
    digits, reference_genotype, tmp_path
):
    from tests.test_trainer import genotype_and_hp

    config, hp = genotype_and_hp(reference_genotype)
    settings = EXPERIMENT.training.model_copy(update={"device": "cpu"})
    small = TrainData(digits.train_x[:256], digits.train_y[:256], digits.val_x, digits.val_y, 10)
    # nothing reaches 100%: stopped as soon as a curve is fitted, before its budget of 6
    stopped = train(
        config, hp, small, Budget(6), settings, seed=3,
        checkpoint_to=tmp_path / "stopped.pt", curve_stop=CurveStop(below=1.0, epochs=6),
    )  # fmt: skip
    assert stopped.status == "stopped", stopped.reason
    assert "learning curve" in stopped.reason
    assert MIN_POINTS <= stopped.epochs < 6
    assert [r["epoch"] for r in stopped.history] == list(range(1, stopped.epochs + 1))
    assert stopped.val_accuracy == stopped.history[-1]["val_accuracy"]
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert state["epoch"] == stopped.epochs, "the checkpoint claims epochs it never trained"
    # resumed, it goes on from the epoch it reached; a threshold of 0 never stops it
    resumed = train(
        config, hp, small, Budget(6), settings, seed=3, resume_from=tmp_path / "stopped.pt",
        curve_stop=CurveStop(below=0.0, epochs=6),
    )  # fmt: skip
    assert resumed.status == "ok" and resumed.epochs == 6
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))


def test_a_trial_spec_carries_its_curve_stop_as_json_and_runs_without_one():
    spec = TrialSpec(
        trial_id="t", config={}, epochs=3, curve_stop={"below": 0.8, "epochs": 9, "first_epoch": 1}
    )
    again = TrialSpec.model_validate_json(spec.model_dump_json())
    assert again.curve_stop == CurveStop(0.8, 9, 1)
    assert TrialSpec(trial_id="t", config={}, epochs=3).curve_stop is None
    with pytest.raises(ValueError, match="below"):
        TrialSpec(trial_id="t", config={}, epochs=3, curve_stop={"below": 2, "epochs": 9})


# -- a search ----------------------------------------------------------------------------------


def search(tmp_path, scheduler: ASHA, curve_stop: bool | None, executor=None) -> SearchController:
    """60 random trials of the synthetic objective (proposals do not depend on the results)."""
    cfg = EXPERIMENT.strategy.model_copy(update={"name": "random"})
    cost = model_cost(1, 16, 10)
    kw = {} if curve_stop is None else {"curve_stop": curve_stop}
    return SearchController(
        space=SPACE,
        strategy=make_strategy(
            SPACE, cfg, seed=1, feasible=within_budget(EXPERIMENT.objectives, cost)
        ),
        scheduler=scheduler,
        executor=executor or InlineExecutor(synthetic()),
        objectives=EXPERIMENT.objectives,
        cost=cost,
        checkpoint_dir=tmp_path / "ck",
        max_trials=60,
        seed=1,
        **kw,
    )


def would_reach(config, epochs: int) -> float:
    """What the synthetic runner reports after `epochs`, had the trial not been stopped."""
    objective = SyntheticObjective(SPACE, in_channels=1, image_size=16, num_classes=10, seed=0)
    return objective.evaluate(config, epochs).val_accuracy


def front(c: SearchController) -> list[tuple[int, float]]:
    return [(t.trial_id, t.val_accuracy) for t in c.front()]


def test_every_trial_at_full_budget_stops_the_hopeless_ones_and_keeps_the_front(tmp_path):
    """scheduler: none (every trial straight to 10 epochs) is where curves save the most."""
    rec = Recorder(InlineExecutor(synthetic()))
    on = search(tmp_path / "on", ASHA(10, 10), True, rec)
    on.run()
    off = search(tmp_path / "off", ASHA(10, 10), False)
    off.run()
    stopped = [t for t in on.trials.values() if t.curve_stopped]
    assert on.stats.curve_stopped == len(stopped) >= 15
    assert on.stats.jobs_failed == 0 and on.stats.retries == 0
    assert on.stats.jobs_done == 60
    # a stopped trial keeps its result at the rung, at the epochs it reached
    for trial in stopped:
        assert MIN_POINTS <= trial.results[0]["epoch"] < 10
        assert trial.trial_id in on.scheduler.results(0)
        assert trial.trial_id not in dict(front(on))
    outcomes = [o.result for o in rec.outcomes if o.result.status == "stopped"]
    assert len(outcomes) == len(stopped) and all("learning curve" in r.reason for r in outcomes)
    # nothing that would have ended on the front was stopped: the front is the one without
    assert front(on) == front(off)
    assert sum(t.results[0]["epoch"] for t in on.trials.values()) < 10 * 60 - 3 * len(stopped)


def test_each_stopped_trial_would_have_ended_dominated_and_is_never_promoted(tmp_path):
    rec = Recorder(InlineExecutor(synthetic()))
    c = search(tmp_path, ASHA(2, 10, 3), True, rec)  # rungs of 2, 6 and 10 epochs
    c.run()
    top = max(r.index for r in c.scheduler.rungs)
    stopped = [t for t in c.trials.values() if t.curve_stopped]
    assert stopped, "no trial was stopped"
    for trial in stopped:
        rung = max(trial.results)
        later = [j for j in rec.jobs if j.spec.trial_id.startswith(f"trial-{trial.trial_id:05d}")]
        assert max(j.rung for j in later) == rung, "a stopped trial was promoted"
        reached = [
            t.results[top]["val_accuracy"]
            for t in c.trials.values()
            if top in t.results and not t.curve_stopped and t.params <= trial.params
        ]
        assert reached and would_reach(trial.config, 10) < max(reached)
    # each job got the best top-rung accuracy of the trials no larger, once there was one
    for job in rec.jobs:
        if job.spec.curve_stop is not None:
            assert job.spec.curve_stop.epochs == 10 and 0 < job.spec.curve_stop.below <= 1


def test_off_nothing_changes(tmp_path):
    rec = Recorder(InlineExecutor(synthetic()))
    off = search(tmp_path / "a", ASHA(2, 10, 3), False, rec)
    off.run()
    default = search(tmp_path / "b", ASHA(2, 10, 3), None)
    default.run()
    assert all(job.spec.curve_stop is None for job in rec.jobs)
    assert off.stats.curve_stopped == 0
    assert not any(t.curve_stopped for t in off.trials.values())
    assert {i: t.results for i, t in off.trials.items()} == {
        i: t.results for i, t in default.trials.items()
    }
    rungs = {r.index: r.epochs for r in off.scheduler.rungs}
    for trial in off.trials.values():
        assert all(m["epoch"] == rungs[rung] for rung, m in trial.results.items())


def test_a_restored_search_keeps_its_stopped_trials_held(tmp_path):
    first = search(tmp_path, ASHA(2, 10, 3), True)
    first.run()
    records = finished_records(
        first, lambda t, rung: "stopped" if t.curve_stopped and rung == max(t.results) else "ok"
    )
    assert Counter(r.status for r in records)["stopped"] == first.stats.curve_stopped > 0
    second = search(tmp_path, ASHA(2, 10, 3), True)
    second.restore(records)
    assert {i for i, t in second.trials.items() if t.curve_stopped} == {
        i for i, t in first.trials.items() if t.curve_stopped
    }
    while (job := second.scheduler.next_job(allow_new=False)) is not None:
        assert not second.trials[job.trial_id].curve_stopped, "a stopped trial was promoted"


def test_asha_holds_a_trial_in_its_top_third_without_promoting_another():
    asha = ASHA(1, 9, 3)
    jobs = [asha.next_job() for _ in range(6)]
    for job, value in zip(jobs, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], strict=True):
        asha.record(job.trial_id, 0, value)
    asha.hold(jobs[0].trial_id, 0)
    promoted = asha.next_job(allow_new=False)
    assert promoted.trial_id == jobs[1].trial_id  # the 2nd best; the held best takes a place
    assert asha.next_job(allow_new=False) is None
    with pytest.raises(ValueError, match="no result"):
        asha.hold(99, 0)


# -- the experiment file --------------------------------------------------------------------


def test_curve_stop_is_off_by_default_and_a_bad_value_is_refused_with_its_field():
    assert experiment_from_dict(digits_config()).scheduler.curve_stop is False
    on = experiment_from_dict(digits_config(scheduler={"name": "asha", "curve_stop": True}))
    assert on.scheduler.curve_stop is True
    cases = [
        ({"scheduler": {"curve_stop": "sometimes"}}, "is not true or false"),
        (
            {
                "scheduler": {"curve_stop": True},
                "objectives": {"targets": [{"metric": "params", "goal": "minimize"}]},
            },
            "val_accuracy",
        ),
        (
            {"scheduler": {"curve_stop": True}, "budget": {"min_epochs": 1, "max_epochs": 3}},
            "max_epochs",
        ),
    ]
    for overrides, words in cases:
        with pytest.raises(ConfigError, match=words) as info:
            experiment_from_dict(digits_config(**overrides))
        assert str(info.value).startswith("scheduler.curve_stop")
    # the file's check and the curve agree on the epochs a curve needs
    budget = {"min_epochs": 1, "max_epochs": MIN_POINTS + 1}
    experiment_from_dict(digits_config(scheduler={"curve_stop": True}, budget=budget))
