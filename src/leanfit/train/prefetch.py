"""Make the next items of an iterator in a background thread while the caller uses this one.

The trainer's augmented batches come from tensor operations, which release the GIL: on a CPU a
small model's step leaves a core mostly idle (its time goes to per-operation overhead), and the
next chunk of batches can be augmented there meanwhile (as PyTorch's DataLoader overlaps loading
with training through its worker processes, without their copies and start-up).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = range(3)


class Prefetched(Generic[T]):
    """Iterate over `items` with up to `depth` of them made ahead by a background thread.

    Items come in the same order, made by one thread in turn, so whatever state making them reads
    (the global torch random generator) is read in the same order as in a plain loop, provided the
    caller does not use that state itself meanwhile. `setup` runs first in the thread (e.g. its
    own per-thread settings). An exception raised while making an item is
    raised by `next()` in the caller's thread, in its place. `close()` (also on leaving a `with`
    block) stops the thread after the item it is making and drops what was made ahead.

    Example:
        >>> with Prefetched(x * x for x in range(4)) as squares:
        ...     list(squares)
        [0, 1, 4, 9]
    """

    def __init__(
        self, items: Iterable[T], depth: int = 1, setup: Callable[[], None] | None = None
    ) -> None:
        if depth < 1:
            raise ValueError(f"The value of `depth` is {depth}, but must be `depth >= 1`")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._run, args=(iter(items), setup), name="leanfit-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterator[T], setup: Callable[[], None] | None) -> None:
        try:
            if setup is not None:
                setup()
            for item in items:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._put((_ERROR, e))

    def _put(self, message: tuple[int, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._done = True
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        self._stop.set()  # the thread sees it within 0.05 s of finishing the item it makes
        self._done = True
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
