"""A component of the fake cluster that reacts to the API server's changes, one at a time.

Like a controller's informer: FakeApiServer.subscribe() hands every stored change to a queue; one
thread per component takes them in order and calls `handle`. Nothing polls.
"""

from __future__ import annotations

import queue
import threading
import traceback

from .apiserver import FakeApiServer

_STOP = object()


class Watcher:
    name = "watcher"

    def __init__(self, api: FakeApiServer):
        self.api = api
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> Watcher:
        self.api.subscribe(lambda *event: self._queue.put(event))
        self._thread = threading.Thread(target=self._loop, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(10)

    def poke(self) -> None:
        """Run `handle` once more without a change (e.g. after a process exited)."""
        self._queue.put(("POKE", "", "", {}))

    def handle(self, type_: str, group: str, plural: str, obj: dict) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            try:
                self.handle(*event)
            except Exception:  # a bug in the fake: the test fails on exit (FakeApiServer.errors)
                if not self.stopping.is_set():
                    self.api.errors.append(f"{self.name}:\n{traceback.format_exc()}")
