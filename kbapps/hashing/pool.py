"""The one process pool of kbucket: worker processes, forked only while this process
runs a single thread.

Strategy
--------
Hashing many small files is Python-bound (open, read, fstat, close and a few tuples per
file hold the GIL: two threads run it *slower* than one), so it is spread over
processes. They are made with ``fork``: a forked worker starts in a few milliseconds
with every module already imported and the job's data already in its memory, where a
``spawn`` or ``forkserver`` worker starts an interpreter, imports kbapps again and
unpickles its data (tens of milliseconds each, against a whole ``kb-prv-create`` run of
~0.4 s over 20,000 files, ``docs/benchmarks.md``).

``fork`` is only safe while the process runs one thread: the child gets a copy of every
lock another thread held at that instant (the allocator's, the import lock, a logging
handler's...) and nobody to release it (POSIX; Python 3.12 warns). So every fork of
kbucket goes through ``_fork`` here, which checks at that moment that the process has
one thread (``threading``'s count and the kernel's, ``/proc/self/task``) and refuses
otherwise. A refused fork costs speed, never correctness: the work is then done in the
calling process. Two ways to have workers, both safe:

* **Forked for a job**, once it has ``fork_at`` worth of work (``kb-prv-create``, one
  thread): the workers inherit the job's context (fork copies the memory; nothing is
  serialised) and stay with the pool for later jobs until ``close``.
* **Started before the program starts any thread** (``ProcessPool.start``):
  ``kbucket-host`` starts its pool before ``anyio.run``; the share's indexer then runs
  jobs on it from anyio worker threads, one at a time, each job's context sent to the
  workers through their pipes.

A job (``ProcessPool.run``) is a factory, a module-level function that workers started
before the job find by module and qualified name (as pickle does), and a context, plain
data (marshal: tuples, lists, dicts, strings, numbers, bytes, sets) from which each
worker process builds its ``Worker``; the calling process brings its own ``Worker``
(which may hold what cannot be sent, such as an open database). Units of work are plain
data too. The caller's process feeds each worker through a pipe of its own, keeping it
``_AHEAD`` units ahead of what it has reported, and does the other units itself in
between, so the load balances itself; the units of a worker that dies are done by the
caller's process, and the job goes on.

Frames on the pipes: a 4-byte length, then a marshal dump. To a worker: ``(_JOB,
module, qualname, context)``, ``(_UNIT, number, unit)``, ``(_END,)``; from a worker:
``(number, records)`` per unit and ``(_ENDED, records)`` in answer to ``_END``.
``ForkedTask`` is the other use of ``_fork``: one function run beside the caller on a
copy of its memory (``kbapps.prvbuild`` checks half a tree that way).

Why one module of some 620 lines: the pool, a job's run and ``ForkedTask`` share the
one rule that makes forking safe (``single_threaded``, ``_fork``) and the framing of
the pipes; kept together, no other module can fork.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import marshal
import os
import select
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Protocol

__all__ = (
    "PARALLEL_MIN_FILES",
    "ForkedTask",
    "PoolRun",
    "ProcessPool",
    "Worker",
    "WorkerFactory",
    "default_workers",
    "single_threaded",
)

#: Below this many files, worker processes are not worth it: 500 files of 4 KiB take
#: ~10 ms in one process.
PARALLEL_MIN_FILES = 500
#: Units handed to a worker ahead of what it has reported: one to work on and two
#: waiting, so it never waits for the caller, even while the caller does a unit of
#: its own and then writes out a directory (``kb-prv-create``: up to ~3 ms between
#: two visits); at the end they are handed out one at a time (``PoolRun.pump``), so
#: little is left on one side (what was handed out cannot be taken back).
_AHEAD = 3
_FRAME = struct.Struct("!I")
#: Capacity asked for each result pipe (Linux ``F_SETPIPE_SZ``; 1 MiB is the default
#: ``/proc/sys/fs/pipe-max-size``). A unit of 128 files of a tree reports ~70 KB,
#: more than the default 64 KiB pipe: with it, a worker blocked on every report
#: until this process next read its pipe, idle for up to a unit's time each time.
_RESULT_PIPE_BYTES = 1 << 20
#: Bytes read from a result pipe at a time (a 20,000-file tree sends ~7 MB of text).
_READ_BYTES = 1 << 20
_JOB, _UNIT, _END = 0, 1, 2
#: The unit number of a worker's answer to ``_END``.
_ENDED = -1


class Worker(Protocol):
    """What a job runs in each process (built by the job's factory in a worker)."""

    def process(self, unit: Any) -> list[Any]:
        """Return the records of one unit of work (marshal-able)."""
        ...

    def finish(self) -> list[Any]:
        """The job is over: return the last records (e.g. warnings of a last store)."""
        ...


#: Builds a job's ``Worker`` in a worker process from the job's context.
WorkerFactory = Callable[[Any], Worker]


def default_workers() -> int:
    """Return the number of CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def single_threaded() -> bool:
    """Return whether this process runs one thread now (when it may fork)."""
    threading = sys.modules.get("threading")  # not imported: no thread was made by it
    if threading is not None and threading.active_count() > 1:
        return False
    try:
        # The kernel's count also sees threads that C libraries started.
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc (not Linux): threading's count is what there is
        return True


def _fork(body: Callable[[], None], close_in_child: Sequence[int]) -> int | None:
    """Run ``body`` in a forked child, which first closes ``close_in_child`` and exits
    when ``body`` returns (status 1 if it raised); return its pid, or None if this
    process may not fork now (other threads, or no ``fork``)."""
    if not hasattr(os, "fork") or not single_threaded():
        return None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; coverage does not follow
        code = 0
        try:
            # The child's collections never walk the objects it inherited: walking
            # them writes to them, and each page written is copied (a share's index
            # would be copied into every worker).
            gc.freeze()
            for fd in close_in_child:
                os.close(fd)
            body()
        except BaseException:
            code = 1
        # _exit: never run the parent's atexit handlers or flush its stdio twice.
        os._exit(code)
    return pid


def _enlarge(fd: int) -> None:
    """Ask for a ``_RESULT_PIPE_BYTES`` pipe; keep the default where that is refused
    (a per-user pipe quota) or not offered (not Linux)."""
    import fcntl  # here: only a pool that forks needs it

    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, _RESULT_PIPE_BYTES)


def _frame(value: Any) -> bytes:
    blob = marshal.dumps(value)
    return _FRAME.pack(len(blob)) + blob


def _read_frame(stream: BinaryIO) -> Any:
    """The next frame of a blocking stream, or None at its end."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (length,) = _FRAME.unpack(head)
    body = stream.read(length)
    return marshal.loads(body) if len(body) == length else None


class _Inbox:
    """The read end of a pipe of frames, read without blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.pending = bytearray()
        self.eof = False

    def read(self) -> list[Any]:
        """Return the frames that have arrived (complete ones only)."""
        frames: list[Any] = []
        while not self.eof:
            try:
                chunk = os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            pending = self.pending
            pending += chunk
            # Frames are read in place: no copy per frame, one move of what is left.
            at = 0
            while len(pending) - at >= _FRAME.size:
                (length,) = _FRAME.unpack_from(pending, at)
                end = at + _FRAME.size + length
                if len(pending) < end:
                    break
                with memoryview(pending) as view:
                    frames.append(marshal.loads(view[at + _FRAME.size : end]))
                at = end
            if at:
                del pending[:at]
        return frames


def _resolve(module: str, qualname: str) -> WorkerFactory:
    # In a worker started before the job: find the factory as pickle would.
    import importlib

    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    factory: WorkerFactory = target
    return factory


def _serve(work_fd: int, result_fd: int, job: tuple[WorkerFactory, Any] | None) -> None:
    # A worker process's life: messages from its work pipe until that closes.
    worker = job[0](job[1]) if job is not None else None
    # Buffered writes: a raw write may write part of a frame; flushed per frame.
    with os.fdopen(work_fd, "rb") as work, os.fdopen(result_fd, "wb") as results:
        while (message := _read_frame(work)) is not None:
            kind = message[0]
            if kind == _UNIT:
                assert worker is not None, "a unit before its job"
                results.write(_frame((message[1], worker.process(message[2]))))
            elif kind == _JOB:
                worker = _resolve(message[1], message[2])(message[3])
                continue
            else:
                last = worker.finish() if worker is not None else []
                results.write(_frame((_ENDED, last)))
                worker = None
            results.flush()


class _Feed:
    """The caller's end of one worker process: its pid, the write end of its work
    pipe (-1 once closed) with the bytes not yet written there, its result pipe, and
    the units it holds."""

    def __init__(self, pid: int, work_fd: int, result_fd: int) -> None:
        os.set_blocking(work_fd, False)
        self.pid = pid
        self.work_fd = work_fd
        self.outgoing = bytearray()
        self.inbox = _Inbox(result_fd)
        self.held: set[int] = set()
        #: Between a job's end message and the worker's answer.
        self.ending = False

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue a message (written by ``flush``)."""
        self.outgoing += _frame(message)

    def flush(self) -> None:
        """Write what the pipe takes now; a worker that is gone takes nothing."""
        if not self.outgoing or self.work_fd < 0:
            return
        try:
            written = os.write(self.work_fd, self.outgoing)
        except BlockingIOError:
            return
        except OSError:  # the worker is gone: its inbox reaches its end too
            self.outgoing.clear()
            self.close_work()
            return
        del self.outgoing[:written]

    def close_work(self) -> None:
        """Close the work pipe (the worker finishes what it has, then exits)."""
        if self.work_fd >= 0:
            os.close(self.work_fd)
            self.work_fd = -1

    def kill(self) -> None:
        """Kill the process, if not reaped yet (its pid could be another's then)."""
        if self.pid:
            import signal  # here: only on this rare path (start-up)

            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def reap(self, kill: bool) -> None:
        """Close both pipes and wait for the process (killed first if ``kill``)."""
        if kill:
            self.kill()
        self.close_work()
        if self.inbox.fd >= 0:
            os.close(self.inbox.fd)
            self.inbox.fd = -1
        if self.pid:  # (waitpid(0) would wait for any child)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0


class ProcessPool:
    """Worker processes for jobs (see the module notes); none are forked beside other
    threads.

    Args:
        processes: processes to work on, this one included (``processes - 1``
            workers); default ``default_workers()``.

    A pool that was not ``start``-ed belongs to the thread that uses it; one that was
    runs jobs from any thread, one at a time (a job started while another runs gets
    no workers: it is done in its caller's process). ``close`` it when done.
    """

    def __init__(self, processes: int | None = None) -> None:
        #: Processes to work on, the caller's included.
        self.processes = default_workers() if processes is None else max(1, processes)
        self._feeds: list[_Feed] = []
        self._lock = _thread.allocate_lock()  # held by the running job
        # Held while a worker is killed or reaped: ``close`` from another thread
        # must never kill a pid that was reaped meanwhile (and maybe reused).
        self._reaping = _thread.allocate_lock()
        self._closed = False

    @property
    def workers(self) -> int:
        """The worker processes alive now."""
        return len(self._feeds)

    def start(self) -> bool:
        """Fork the workers now, for jobs to come: call it before the program starts
        any thread (``kbucket-host`` does, before ``anyio.run``).

        Returns:
            Whether the pool has workers (not if this process runs other threads
            already, cannot fork, or ``processes`` is 1).
        """
        with self._lock:
            self._spawn(None)
        return bool(self._feeds)

    def run(
        self,
        local: Worker,
        factory: WorkerFactory,
        context: Any,
        on_results: Callable[[list[Any]], None],
        *,
        fork_at: int = PARALLEL_MIN_FILES,
    ) -> PoolRun:
        """Begin a job; use it as ``PoolRun`` says, and ``close`` it.

        Args:
            local: does the job's units in this process.
            factory: builds the job's worker in a worker process from ``context``; a
                module-level function.
            context: plain data (marshal), or anything if the pool was not started
                (its workers are then forked for the job and inherit it).
            on_results: called in this process with each unit's records, in the order
                they arrive (its exceptions propagate to the caller of ``pump``,
                ``step`` or ``finish``).
            fork_at: the job uses workers (forking them if needed) once this much
                work is queued (the ``weight`` of ``PoolRun.add``).
        """
        owner = not self._closed and self._lock.acquire(blocking=False)
        return PoolRun(self, local, factory, context, on_results, fork_at, owner)

    def close(self) -> None:
        """Stop the workers (idle ones exit once their work pipe closes) and reap them.

        From another thread while a job runs: that job's workers are killed (the job
        then ends in its own process, which reaps them).
        """
        self._closed = True
        if not self._lock.acquire(blocking=False):
            with self._reaping:
                for feed in list(self._feeds):
                    feed.kill()
            return
        try:
            for feed in self._feeds:
                feed.close_work()  # all first: they exit at once, side by side
            for feed in list(self._feeds):
                self._drop(feed, kill=False)
        finally:
            self._lock.release()

    def _spawn(self, job: tuple[WorkerFactory, Any] | None) -> list[_Feed]:
        # Fork workers up to ``processes - 1`` (the caller holds the lock); a worker
        # forked for a job builds its worker from the inherited ``job``.
        made: list[_Feed] = []
        while not self._closed and len(self._feeds) < self.processes - 1:
            work_r, work_w = os.pipe()
            result_r, result_w = os.pipe()
            _enlarge(result_r)
            # The child closes the caller's end of every worker's pipes, its own
            # included: a write end of its work pipe left open in it (or in a later
            # worker) would keep it from ever seeing the end of its work.
            theirs = [fd for feed in self._feeds for fd in (feed.work_fd, feed.inbox.fd)]

            def body(work_r: int = work_r, result_w: int = result_w) -> None:
                _serve(work_r, result_w, job)

            pid = _fork(body, [*theirs, work_w, result_r])
            os.close(work_r)
            os.close(result_w)
            if pid is None:
                os.close(work_w)
                os.close(result_r)
                break
            feed = _Feed(pid, work_w, result_r)
            self._feeds.append(feed)
            made.append(feed)
        return made

    def _drop(self, feed: _Feed, kill: bool) -> None:
        # The caller holds the lock.
        with self._reaping:
            feed.reap(kill)
        self._feeds.remove(feed)


class PoolRun:
    """One job on a ``ProcessPool`` (made by ``ProcessPool.run``).

    Use: ``add`` units, calling ``pump`` now and then (or ``step`` to also do one
    here); ``finish`` once all are added; ``close`` always (in a ``finally``). Every
    unit's records reach ``on_results`` exactly once, whoever did it.
    """

    def __init__(
        self,
        pool: ProcessPool,
        local: Worker,
        factory: WorkerFactory,
        context: Any,
        on_results: Callable[[list[Any]], None],
        fork_at: int,
        owner: bool,
    ) -> None:
        self._pool = pool
        self._local = local
        self._job = (factory, context)
        self._on_results = on_results
        self._fork_at = fork_at
        #: Holds the pool's lock: may use (and fork) its workers.
        self._owner = owner
        self._feeds: list[_Feed] = []
        self._units: list[Any] = []
        self._next = 0  # the first unit neither handed out nor done here
        self._retry: list[int] = []  # units of workers that died
        self._weight = 0
        self._engaged = False
        self._all_added = False
        self._ended = False

    def add(self, units: Sequence[Any], weight: int) -> None:
        """Queue ``units`` (plain data), worth ``weight`` (files, for ``fork_at``)."""
        self._units.extend(units)
        self._weight += weight

    def pump(self) -> None:
        """Engage the workers once there is enough work, take their reports and hand
        them units; never blocks."""
        if not self._engaged and self._owner and self._weight >= self._fork_at:
            self._engaged = True
            self._engage()
        ahead = _AHEAD
        if self._all_added and len(self._units) - self._next <= _AHEAD * len(self._feeds):
            # The last units: one each at a time, so that no worker is left with a
            # queued unit while this process, done with its own, waits for it.
            ahead = 1
        for feed in self._feeds:
            self._receive(feed)
            while feed.work_fd >= 0 and len(feed.held) < ahead and self._next < len(self._units):
                number = self._next
                self._next += 1
                feed.held.add(number)
                feed.send((_UNIT, number, self._units[number]))
            feed.flush()

    def step(self) -> bool:
        """Do one unit here, or wait for the workers to report; return False once
        every unit added so far is reported."""
        self.pump()
        if self._retry:
            number = self._retry.pop()
        elif self._next < len(self._units):
            number = self._next
            self._next += 1
        else:
            if not any(feed.held for feed in self._feeds):
                return False
            self._wait()
            return True
        self._on_results(self._local.process(self._units[number]))
        return True

    def finish(self, between: Callable[[], None] | None = None) -> None:
        """Every unit is added: do what is left, wait for the workers, and end the job
        (each worker's ``finish``, this process's too).

        Args:
            between: called after each unit done here and each wait (to use what is
                complete while the workers go on).
        """
        self._all_added = True
        while self.step():
            if between is not None:
                between()
        last = self._local.finish()
        if last:
            self._on_results(last)
        for feed in self._feeds:
            feed.ending = True
            feed.send((_END,))
        while any(feed.ending for feed in self._feeds):
            for feed in self._feeds:
                self._receive(feed)
                feed.flush()
            if any(feed.ending for feed in self._feeds):
                self._wait()
        self._ended = True

    def close(self) -> None:
        """End the job's use of the pool. After ``finish``, the workers stay with the
        pool, idle; otherwise (an error, or the caller stopped) they may be in the
        middle of a unit, and are killed."""
        if not self._owner:
            return
        pool = self._pool
        try:
            for feed in self._feeds:
                if not self._ended or pool._closed or feed.inbox.eof:
                    pool._drop(feed, kill=True)
            if pool._closed:
                for feed in list(pool._feeds):
                    pool._drop(feed, kill=False)
        finally:
            self._feeds = []
            self._owner = False
            pool._lock.release()

    def _engage(self) -> None:
        # The pool's idle workers learn the job; the missing ones are forked with it.
        for feed in self._pool._feeds:
            factory, context = self._job
            feed.send((_JOB, factory.__module__, factory.__qualname__, context))
            self._feeds.append(feed)
        self._feeds += self._pool._spawn(self._job)

    def _receive(self, feed: _Feed) -> None:
        for number, records in feed.inbox.read():
            if number == _ENDED:
                feed.ending = False
                if records:
                    self._on_results(records)
            else:
                feed.held.discard(number)
                self._on_results(records)
        if feed.inbox.eof:
            # It died (killed, out of memory): its units are done here.
            self._retry += sorted(feed.held, reverse=True)
            feed.held.clear()
            feed.outgoing.clear()
            feed.close_work()
            feed.ending = False

    def _wait(self) -> None:
        # Until a worker reports or ends, or a full work pipe takes more.
        poller = select.poll()
        for feed in self._feeds:
            if not feed.inbox.eof:
                poller.register(feed.inbox.fd, select.POLLIN)
            if feed.outgoing and feed.work_fd >= 0:
                poller.register(feed.work_fd, select.POLLOUT)
        poller.poll()


class ForkedTask:
    """One function run in a forked process beside this one, on a copy of this
    process's memory as it was at the fork (nothing is serialised on the way in); its
    return value (marshal-able) comes back through a pipe.

    ``start`` it, do the rest of the work here, then take its ``result``; ``close``
    always (in a ``finally``). A process forked while a task runs inherits the read
    end of the task's pipe; the task's own end of it is its alone.
    """

    def __init__(self, pid: int, fd: int) -> None:
        self._pid = pid
        self._fd = fd

    @classmethod
    def start(cls, body: Callable[[], object]) -> ForkedTask | None:
        """Fork a process that runs ``body``; None if this process may not fork now
        (other threads run): then the caller does the work itself."""
        read_fd, write_fd = os.pipe()

        def child() -> None:
            value = body()
            with os.fdopen(write_fd, "wb") as pipe:  # (buffered: written whole)
                pipe.write(_frame((value,)))  # in a tuple: None is a value too

        pid = _fork(child, [read_fd])
        os.close(write_fd)
        if pid is None:
            os.close(read_fd)
            return None
        return cls(pid, read_fd)

    def result(self) -> tuple[bool, Any]:
        """Wait for the task; return ``(True, its value)``, or ``(False, None)`` if it
        died without one."""
        with os.fdopen(self._fd, "rb") as pipe:
            self._fd = -1
            frame = _read_frame(pipe)
        self.close()
        return (True, frame[0]) if isinstance(frame, tuple) else (False, None)

    def close(self) -> None:
        """Kill the task if it still runs, and reap it (no effect after ``result``)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            import signal  # here: only on this rare path (start-up)

            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        if self._pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0
