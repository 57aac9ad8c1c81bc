"""ASHA and Hyperband: the rung ladder, the promotion rule, failures, restoring, brackets."""

from __future__ import annotations

import doctest
import math

import pytest

import leanfit.search.asha
import leanfit.search.hyperband
from leanfit.search.asha import ASHA, make_rungs
from leanfit.search.hyperband import Hyperband


@pytest.mark.parametrize("module", [leanfit.search.asha, leanfit.search.hyperband])
def test_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("min_epochs", "max_epochs", "eta", "epochs"),
    [
        (1, 27, 3, [1, 3, 9, 27]),
        (1, 10, 3, [1, 3, 9, 10]),  # the last rung is max_epochs even when it is not 3^k
        (2, 20, 3, [2, 6, 18, 20]),
        (1, 16, 2, [1, 2, 4, 8, 16]),
        (5, 5, 3, [5]),
    ],
)
def test_rung_ladder(min_epochs, max_epochs, eta, epochs):
    rungs = make_rungs(min_epochs, max_epochs, eta)
    assert [r.epochs for r in rungs] == epochs
    assert [r.index for r in rungs] == list(range(len(epochs)))
    assert all(r.data_fraction == 1.0 and r.resolution is None for r in rungs)


def test_data_fraction_and_resolution_grow_geometrically_to_full():
    rungs = make_rungs(1, 9, 3, min_data_fraction=0.1, min_resolution=8, full_resolution=32)
    assert [r.data_fraction for r in rungs] == pytest.approx([0.1, math.sqrt(0.1), 1.0])
    assert [r.resolution for r in rungs] == [8, 16, 32]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 1}, "The value of `eta` is 1, but must be an integer `eta >= 2`"),
        ({"min_epochs": 0}, "The value of `min_epochs` is 0, but must be `min_epochs >= 1`"),
        (
            {"max_epochs": 0},
            "The value of `max_epochs` is 0, but must be `max_epochs >= min_epochs` (1)",
        ),
        (
            {"min_data_fraction": 0.0},
            "The value of `min_data_fraction` is 0.0, but must be `0 < min_data_fraction <= 1`",
        ),
        ({"min_resolution": 8}, "`min_resolution` is set but `full_resolution` is not"),
        (
            {"min_early_stopping_rate": 3},
            "The value of `min_early_stopping_rate` is 3, but must be "
            "`0 <= min_early_stopping_rate < 3`",
        ),
    ],
)
def test_constructor_says_what_is_wrong(kwargs, message):
    args = {"min_epochs": 1, "max_epochs": 9, "eta": 3, **kwargs}
    with pytest.raises(ValueError) as e:
        ASHA(**args)
    assert message in str(e.value)


def start(asha, n):
    jobs = [asha.next_job() for _ in range(n)]
    assert all(not j.is_promotion and j.from_epochs == 0 for j in jobs)
    return jobs


def test_after_eta_results_the_best_is_promoted_once_from_its_checkpoint():
    asha = ASHA(min_epochs=1, max_epochs=10, eta=3)
    jobs = start(asha, 3)
    assert [j.trial_id for j in jobs] == [0, 1, 2]
    assert [j.to_epochs for j in jobs] == [1, 1, 1]
    for job, value in zip(jobs, [0.5, 0.2, 0.4], strict=True):
        asha.record(job.trial_id, job.rung.index, value)
    promotion = asha.next_job()
    assert promotion.is_promotion
    assert (promotion.trial_id, promotion.from_epochs, promotion.to_epochs) == (1, 1, 3)
    assert promotion.from_rung.index == 0 and promotion.rung.index == 1
    # floor(3/3) = 1 trial of rung 0 may move up, and it has: the next worker starts a new trial.
    following = asha.next_job()
    assert not following.is_promotion and following.trial_id == 3


def test_two_results_promote_nobody():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for job, value in zip(start(asha, 2), [0.1, 0.2], strict=True):
        asha.record(job.trial_id, 0, value)
    assert not asha.next_job().is_promotion
    assert asha.next_job(allow_new=False) is None


def test_a_finishing_search_rounds_the_top_third_up_so_the_best_reaches_the_top():
    """With no new trial to come (`finishing`), the top 1/eta of n results is ceil(n/eta), as
    synchronous successive halving keeps it: two results promote their best, and its one result
    at the middle rung goes on to the top, where with floor(n/eta) nothing would move."""
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for job, value in zip(start(asha, 2), [0.2, 0.1], strict=True):
        asha.record(job.trial_id, 0, value)
    assert asha.next_job(allow_new=False) is None  # floor(2/3) = 0
    job = asha.next_job(allow_new=False, finishing=True)
    assert (job.trial_id, job.from_epochs, job.to_epochs) == (1, 1, 3)
    assert asha.next_job(allow_new=False, finishing=True) is None  # ceil(2/3) = 1, done
    asha.record(1, 1, 0.05)
    job = asha.next_job(allow_new=False, finishing=True)
    assert (job.trial_id, job.from_epochs, job.to_epochs) == (1, 3, 9)
    asha.record(1, 2, 0.01)
    assert asha.next_job(allow_new=False, finishing=True) is None
    # a failed best is not promoted, finishing or not
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    jobs = start(asha, 2)
    asha.record(jobs[0].trial_id, 0, None)
    asha.record(jobs[1].trial_id, 0, 0.3)
    assert asha.next_job(allow_new=False, finishing=True).trial_id == 1


def test_a_late_good_result_is_promoted_when_it_enters_the_top_third():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    jobs = start(asha, 6)
    for job, value in zip(jobs[:3], [0.3, 0.4, 0.5], strict=True):
        asha.record(job.trial_id, 0, value)
    assert asha.next_job().trial_id == 0  # top 1 of 3
    for job, value in zip(jobs[3:], [0.9, 0.8, 0.1], strict=True):
        asha.record(job.trial_id, 0, value)
    # Now top 2 of 6 are trials 5 (0.1) and 0 (0.3, already promoted): 5 goes up.
    assert asha.next_job().trial_id == 5
    assert not asha.next_job().is_promotion


def test_failed_trials_count_as_results_but_are_never_promoted():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    jobs = start(asha, 3)
    asha.record(jobs[0].trial_id, 0, None)
    asha.record(jobs[1].trial_id, 0, float("nan"))
    asha.record(jobs[2].trial_id, 0, 0.7)
    assert asha.next_job().trial_id == 2  # the only success is the top third
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for job in start(asha, 3):
        asha.record(job.trial_id, 0, None)
    assert asha.next_job(allow_new=False) is None
    assert asha.results(0) == {0: None, 1: None, 2: None}


def test_a_promoted_trial_that_fails_stays_at_its_rung():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for _ in range(3):
        jobs = start(asha, 3)
        for job, value in zip(jobs, [0.1, 0.5, 0.6], strict=True):
            asha.record(job.trial_id, 0, value)
        promotion = asha.next_job()
        assert promotion.is_promotion
        asha.record(promotion.trial_id, 1, None)
    # Three failures at rung 1 and nothing else: nobody goes to rung 2.
    assert asha.next_job(allow_new=False) is None


def test_promotions_from_higher_rungs_come_first():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for i in range(3):
        asha.record(i, 0, 0.1 * (i + 1))
    for i in range(3):
        asha.record(i + 10, 1, 0.1 * (i + 1))  # restored trials, already at rung 1
    job = asha.next_job()
    assert (job.trial_id, job.to_epochs) == (10, 9)
    assert asha.next_job().trial_id == 0


def test_restored_results_are_not_promoted_twice_and_ids_continue():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for i, value in enumerate([0.1, 0.2, 0.3]):
        asha.record(i, 0, value)
    asha.record(0, 1, 0.05)  # trial 0 was promoted before the restart
    job = asha.next_job()
    assert not job.is_promotion and job.trial_id == 3
    with pytest.raises(ValueError, match="already has a result at rung 1"):
        asha.record(0, 1, 0.04)


def test_a_sequential_run_promotes_a_third_of_each_rung():
    asha = ASHA(min_epochs=1, max_epochs=27, eta=3)
    counts = [0, 0, 0, 0]
    for _ in range(200):
        job = asha.next_job()
        counts[job.rung.index] += 1
        # A deterministic value that does not depend on the rung: the ranking is stable.
        asha.record(job.trial_id, job.rung.index, (job.trial_id * 7919 % 101) / 101)
    for k in range(3):
        assert counts[k] // 3 - 1 <= counts[k + 1] <= counts[k] // 3 + 1
    assert counts[3] >= 1


def test_hyperband_brackets_and_weights_follow_the_paper():
    hb = Hyperband(min_epochs=1, max_epochs=81, eta=3)
    assert [[r.epochs for r in b.rungs] for b in hb.brackets] == [
        [1, 3, 9, 27, 81],
        [3, 9, 27, 81],
        [9, 27, 81],
        [27, 81],
        [81],
    ]
    # Table 1 of Li et al. 2018, R = 81, η = 3: n = 81, 34, 15, 8, 5.
    assert hb.weights == (81, 34, 15, 8, 5)


def test_hyperband_where_the_top_is_not_on_the_ladder_has_the_papers_brackets():
    """R = 10, r = 1, η = 3: s_max = ⌊log3 10⌋ = 2, three brackets with n = 9, 5 and 3 (Li et
    al.'s formula); the ladder's extra rung at 10 epochs starts no bracket of its own (a bracket
    starting at 9 epochs, before, only promoted trials by one epoch). A bracket is named by the
    rung its trials start at, as its jobs and MLflow's records carry it."""
    hb = Hyperband(min_epochs=1, max_epochs=10, eta=3)
    assert [[r.epochs for r in b.rungs] for b in hb.brackets] == [[1, 3, 9, 10], [3, 9, 10], [10]]
    assert hb.weights == (9, 5, 3)
    jobs = [hb.next_job() for _ in range(17)]
    assert sorted({j.bracket for j in jobs}) == [0, 1, 3]
    full = next(j for j in jobs if j.bracket == 3)
    hb.record(full.trial_id, 3, 0.1, bracket=3)
    assert hb.bracket_of(full.trial_id) == 3
    restored = Hyperband(min_epochs=1, max_epochs=10, eta=3)
    restored.record(40, 3, 0.2, bracket=3)
    assert restored.bracket_of(40) == 3 and restored.next_job().trial_id == 41
    with pytest.raises(
        ValueError, match=r"bracket 2 does not exist \(the brackets start at rungs 0, 1, 3\)"
    ):
        restored.record(99, 2, 0.2, bracket=2)
    assert [len(Hyperband(1, e, 3).brackets) for e in (1, 2, 3, 8, 9, 10, 26, 27, 100)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        3,
        4,
        5,
    ]


def test_hyperband_spreads_new_trials_by_weight_and_trials_compete_within_brackets():
    hb = Hyperband(min_epochs=1, max_epochs=9, eta=3)
    starts = [0, 0, 0]
    for _ in range(17):
        job = hb.next_job()
        assert not job.is_promotion and job.from_epochs == 0
        assert job.to_epochs == hb.brackets[job.bracket].rungs[0].epochs
        starts[job.bracket] += 1
    assert starts == [9, 5, 3]
    round_robin = Hyperband(min_epochs=1, max_epochs=9, eta=3, assignment="round_robin")
    assert [round_robin.next_job().bracket for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_hyperband_promotes_within_a_bracket():
    hb = Hyperband(min_epochs=1, max_epochs=9, eta=3, assignment="round_robin")
    jobs = [hb.next_job() for _ in range(9)]
    for job in jobs:
        hb.record(job.trial_id, job.rung.index, 1.0 / (job.trial_id + 1))
    promotions = [hb.next_job(allow_new=False) for _ in range(2)]
    # Bracket 0 had trials 0, 3, 6 at 1 epoch: 6 is best; bracket 1 had 1, 4, 7 at 3 epochs: 7.
    assert [(p.trial_id, p.bracket, p.from_epochs, p.to_epochs) for p in promotions] == [
        (6, 0, 1, 3),
        (7, 1, 3, 9),
    ]
    assert hb.next_job(allow_new=False) is None


def test_hyperband_restores_a_trial_with_its_bracket():
    hb = Hyperband(min_epochs=1, max_epochs=9, eta=3)
    with pytest.raises(ValueError, match="give the bracket"):
        hb.record(5, 1, 0.3)
    hb.record(5, 1, 0.3, bracket=1)
    assert hb.bracket_of(5) == 1
    assert hb.next_job().trial_id == 6


def test_vector_results_are_promoted_along_the_rungs_front():
    """(log10 error, log10 parameters) at the first rung: a scalarisation favours the small
    models; ranked as NSGA-II selects, the two promoted of six are the ends of the rung's front,
    one small, one large and accurate, and neither is dominated by any other result."""
    results = {
        0: (-0.5, 2.0),  # small, 32% error: the front's small end
        1: (-0.45, 2.1),  # dominated by 0
        2: (-0.4, 2.2),  # dominated by 0
        3: (-1.6, 4.0),  # large, 2.5% error: the front's accurate end
        4: (-1.0, 3.0),  # on the front, in the middle
        5: (-0.9, 3.5),  # dominated by 4
    }
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for trial_id in results:
        asha.start_trial()
        asha.record(trial_id, 0, results[trial_id])
    promoted = [asha.next_job().trial_id for _ in range(2)]
    assert sorted(promoted) == [0, 3]
    # the front's ends first (the more accurate first), then its middle
    assert list(asha.results(0))[:3] == [3, 0, 4]
    assert asha.next_job().from_rung is None  # 2 of 6: nothing more is due

    # a rung's lone promotion between the front's ends goes to the more accurate, not to the
    # earlier arrival (a chance-level 120-parameter model, 10% accurate, came first)
    lone = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for trial_id, value in enumerate([(math.log10(0.9), 2.08), (math.log10(0.02), 4.0),
                                      (math.log10(0.05), 4.2)]):  # fmt: skip
        lone.start_trial()
        lone.record(trial_id, 0, value)
    assert lone.next_job().trial_id == 1

    # equal weights (Chebyshev, error and log10 size from 100 to 20k parameters on [0, 1])
    # on the same results promote the two smallest instead
    scalar = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for trial_id, (error, size) in results.items():
        scalar.start_trial()
        scalar.record(trial_id, 0, max(10**error, (size - 2.0) / 2.3))
    assert sorted(scalar.next_job().trial_id for _ in range(2)) == [0, 1]


def test_a_failed_vector_is_ranked_last_and_scalars_and_vectors_do_not_mix():
    asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
    for trial_id, value in enumerate([(math.nan, 2.0), (-1.0, 3.0), (-0.5, 2.5), None]):
        asha.start_trial()
        asha.record(trial_id, 0, value)
    assert list(asha.results(0)) == [1, 2, 0, 3]
    assert asha.results(0)[0] is None
    asha.start_trial()
    with pytest.raises(ValueError, match="mixes scalar and vector"):
        asha.record(4, 0, 0.3)
