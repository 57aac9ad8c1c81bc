"""Ctrl-Z and `fg` of `leanfit run`, many times over, on a loaded machine: how often a step is
left stopped (or is not paused).

`leanfit run`'s steps run in process groups of their own; its Ctrl-Z handler pauses their groups
with it, and they must go on when it does. Once in the test suite a search step stayed stopped
for good after `fg` (2026-12-07): the race is rare, so it is counted here rather than tested.

A stand-in of the command (this script, run with `--child`): a step in a group of its own (a
shell's busy loop), two threads blocked in reads (as the command's output pump), the main thread
blocked in a read (as kfp.local's read of the step's output), under `launch`'s own handlers.
The parent sends it SIGTSTP, waits until it and its step are stopped, sends SIGCONT, and waits
for both to run again; a step still stopped 2 s later counts as left stopped (then freed).

    python benchmarks/pause_stress.py --cycles 300 --load 3
    # saves benchmarks/results/pause_stress-<commit>.json

Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def child() -> None:
    from leanfit.launch import _stops_told_to_steps

    step = subprocess.Popen(["sh", "-c", "while :; do :; done"], process_group=0)
    pump, _ = os.pipe()
    for _ in range(2):
        threading.Thread(target=os.read, args=(pump, 1), daemon=True).start()
    with _stops_told_to_steps([]):
        print(step.pid, flush=True)
        read, _ = os.pipe()
        os.read(read, 1)


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def waited(pid: int, stopped: bool, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (state(pid) == "T") == stopped:
            return True
        time.sleep(0.002)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--load", type=int, default=3, help="busy loops beside it")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        return child()
    if not Path("/proc/self/stat").exists():
        sys.exit("error: pause_stress reads /proc (Linux only)")
    load = [
        subprocess.Popen(["sh", "-c", "while :; do :; done"], process_group=0)
        for _ in range(args.load)
    ]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    step = int(proc.stdout.readline())
    left_stopped = not_paused = 0
    started = time.monotonic()
    try:
        for i in range(args.cycles):
            os.kill(proc.pid, signal.SIGTSTP)
            if not (waited(proc.pid, True, 5) and waited(step, True, 5)):
                not_paused += 1
            os.kill(proc.pid, signal.SIGCONT)
            if not waited(proc.pid, False, 5):
                sys.exit(f"error: the command did not go on after `fg` (cycle {i})")
            if not waited(step, False, 2):
                left_stopped += 1
                os.killpg(step, signal.SIGCONT)
            print(f"\rcycle {i + 1}/{args.cycles}: {left_stopped} left stopped", end="")
    finally:
        for p in [*load, proc]:
            p.kill()
        os.killpg(step, signal.SIGKILL)
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or "unknown"
    )
    result = {
        "commit": commit, "cycles": args.cycles, "load": args.load, "cpus": os.cpu_count(),
        "left_stopped": left_stopped, "not_paused": not_paused,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    print(f"\n{left_stopped} of {args.cycles} pauses left the step stopped after `fg`; "
          f"{not_paused} did not pause it")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pause_stress-{commit}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
