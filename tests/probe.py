"""What a process started as `python -m tests.probe ARGS` was given, as JSON on stdout: for the
tests to compare a command forked by `tests.zygote` with a fresh one."""

from __future__ import annotations

import json
import os
import signal
import sys


def _stream(stream) -> dict:
    return {
        "encoding": stream.encoding,
        "errors": stream.errors,
        "line_buffering": stream.line_buffering,
        "write_through": stream.write_through,
        "buffered": hasattr(stream.buffer, "raw"),
        "fd": stream.fileno(),
    }


def _handler(signum: int) -> str:
    handler = signal.getsignal(signum)
    return getattr(handler, "__name__", str(handler))


if __name__ == "__main__":
    import numpy as np

    said = {
        "argv": sys.argv[1:],
        "main": os.path.basename(sys.argv[0]),
        "path": sys.path,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "stdin": sys.stdin.read(),
        "streams": {name: _stream(getattr(sys, name)) for name in ("stdin", "stdout", "stderr")},
        "own_group": os.getpgid(0) == os.getpid(),
        "signals": {s.name: _handler(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)},
        "random": float(np.random.random()),
        "flags": [sys.flags.utf8_mode, sys.flags.dont_write_bytecode, sys.flags.optimize],
    }
    print(json.dumps(said))
    sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
