"""What one proposal of the skopt strategy costs, by surrogate and by results told.

For each surrogate (ET, the default; RF; GP) and each count of results (50, 200, 500 by default),
tells a `SkoptStrategy` on the digits space that many random configurations with random values,
then times `ask(1)` `--asks` times (the first includes building the candidate pool) and prints
and saves the median and the largest. The controller makes proposals while the workers train,
so a proposal costs search time only where it outlasts a trial.

    python benchmarks/proposal_cost.py                  # ET, RF, GP at 50, 200, 500 results
    python benchmarks/proposal_cost.py --quick          # ET and GP at 20 results, 2 asks
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, provenance  # noqa: E402

from leanfit.config import load_experiment  # noqa: E402
from leanfit.search.random_search import RandomSearch  # noqa: E402
from leanfit.search.skopt_strategy import SkoptStrategy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def time_asks(space, surrogate: str, told: int, asks: int, seed: int = 0) -> list[float]:
    """Seconds of each of `asks` proposals after `told` random results."""
    strategy = SkoptStrategy(space, seed=seed, surrogate=surrogate, initial_points=10)
    rng = random.Random(seed)
    for config in RandomSearch(space, seed=seed + 1).ask(told):
        strategy.tell(config, rng.random())
    seconds = []
    for _ in range(asks):
        start = time.perf_counter()
        strategy.ask(1)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surrogates", nargs="+", default=["ET", "RF", "GP"])
    parser.add_argument("--told", nargs="+", type=int, default=[50, 200, 500])
    parser.add_argument("--asks", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="ET and GP at 20 results, 2 asks")
    parser.add_argument("--out", type=Path, default=RESULTS / "proposal_cost.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.surrogates, args.told, args.asks = ["ET", "GP"], [20], 2
    space = load_experiment(ROOT / "examples" / "digits.yaml").search_space()
    rows = []
    for surrogate in args.surrogates:
        for told in args.told:
            seconds = time_asks(space, surrogate, told, args.asks)
            row = {
                "surrogate": surrogate,
                "results_told": told,
                "median_seconds": round(statistics.median(seconds), 3),
                "max_seconds": round(max(seconds), 3),
            }
            rows.append(row)
            print(
                f"{surrogate:>3} after {told:>4} results: median {row['median_seconds']:.2f} s, "
                f"largest {row['max_seconds']:.2f} s ({args.asks} asks)",
                flush=True,
            )
    result = {**provenance("proposal_cost"), "cpu": cpu_model(), "asks": args.asks, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
