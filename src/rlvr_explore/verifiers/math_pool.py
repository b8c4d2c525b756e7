"""A warm pool of math-verify workers: answers checked in parallel, each within its own timeout.

The per-answer clock starts when a warm worker receives the answer, so a worker's start-up (a few
hundred ms, seconds on a busy machine) never turns a right answer into a false zero. A worker that
runs past the timeout, crashes or runs out of memory is killed and replaced alone; the others keep
their work.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import weakref
from collections import deque
from pathlib import Path

WORKER = Path(__file__).with_name("math_worker.py")


class Worker:
    def __init__(self, timeout_s: float, memory_mb: int):
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), str(timeout_s), str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.buffer = b""
        self.ready = False
        self.job: tuple[int, float] | None = None  # (index of the answer, deadline)

    def lines(self) -> list[bytes] | None:
        """Complete lines read now; None at end of file (the worker died)."""
        chunk = os.read(self.process.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *done, self.buffer = self.buffer.split(b"\n")
        return done

    def send(self, index: int, response: str, reference: str, timeout_s: float) -> bool:
        try:
            self.process.stdin.write(json.dumps([response, reference]).encode() + b"\n")
        except (BrokenPipeError, OSError):
            return False
        self.job = (index, time.monotonic() + timeout_s)
        return True

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


def _shutdown(workers: list) -> None:
    for worker in workers:
        worker.kill()


class MathPool:
    """``pool(pairs)`` -> rewards; ``stats`` counts timeouts, errors and worker restarts."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int = 4096, startup_timeout_s: float = 300.0):
        self.size, self.timeout_s, self.memory_mb = workers, timeout_s, memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.workers: list[Worker] = []
        self.stats = {"timeouts": 0, "errors": 0, "worker_restarts": 0}
        self._finalizer = weakref.finalize(self, _shutdown, self.workers)

    def close(self) -> None:
        _shutdown(self.workers)
        self.workers.clear()

    def _replace(self, worker: Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = Worker(self.timeout_s, self.memory_mb)
        self.stats["worker_restarts"] += 1

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        while len(self.workers) < self.size:
            self.workers.append(Worker(self.timeout_s, self.memory_mb))
        rewards = [0.0] * len(pairs)
        queue = deque(range(len(pairs)))
        failed_starts = 0
        while queue or any(w.job for w in self.workers):
            for worker in self.workers:
                if worker.ready and worker.job is None and queue:
                    index = queue.popleft()
                    if not worker.send(index, *pairs[index], self.timeout_s):
                        queue.appendleft(index)
                        self._replace(worker)
            selector = selectors.DefaultSelector()
            for worker in self.workers:
                selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
            deadlines = [w.job[1] for w in self.workers if w.job]
            wait = min(deadlines) - time.monotonic() if deadlines else self.startup_timeout_s
            events = selector.select(max(0.0, wait))
            selector.close()
            if not events and not deadlines:
                raise RuntimeError(f"math-verify workers did not start within {self.startup_timeout_s:.0f} s; "
                                   f"check that `{sys.executable} {WORKER} 5 4096` runs")
            for key, _ in events:
                worker = key.data
                lines = worker.lines()
                if lines is None:  # died: out of memory, or a crash in a C extension
                    if worker.job:
                        self.stats["errors"] += 1
                        worker.job = None
                    elif not worker.ready:
                        failed_starts += 1
                        if failed_starts > 3 * self.size:
                            raise RuntimeError(f"math-verify workers exit at start; run `{sys.executable} {WORKER} 5 4096` to see why")
                    self._replace(worker)
                    continue
                for line in lines:
                    if line == b"ready":
                        worker.ready = True
                    elif worker.job:
                        reward = json.loads(line)
                        if reward is None:
                            self.stats["errors"] += 1
                        rewards[worker.job[0]] = float(reward or 0.0)
                        worker.job = None
            now = time.monotonic()
            for worker in list(self.workers):
                if worker.job and worker.job[1] <= now:
                    self.stats["timeouts"] += 1
                    worker.job = None
                    self._replace(worker)
        return rewards
