"""Spinning the controller: :class:`InputFirstSpinner` (inputs taken straight from one wait set)
and :func:`stop_on_signals` (SIGINT / SIGTERM only ask the spin loop to end, so a node can leave
through its lifecycle and the process exits 0 however many signals arrive)."""

from __future__ import annotations

import operator
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ShutdownException,
    TimeoutException,
)

__all__ = ["InputFirstSpinner", "stop_on_signals"]


def stop_on_signals(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> threading.Event:
    """Install handlers that only set the returned event (call from the main thread, before
    ``rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)``).

    ``ros2 launch`` sends SIGINT to the process group on Ctrl-C and forwards another one
    milliseconds later; Python's default handler raises KeyboardInterrupt wherever the second
    lands (e.g. in ``destroy_node``), and rclpy's own handler shuts the context down before an
    active controller could send its fallback command. With these handlers the spin loop sees
    the event within its wait timeout and the clean exit runs once; the first signal sets them
    to SIG_IGN, so further ones are ignored until the process has exited (launch escalates to
    SIGKILL should the clean exit hang).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        # ignored from now on: a Python handler would be reset to the default (terminate) while
        # the interpreter finalises, so a late signal of a burst would still kill the process
        for s in signals:
            signal.signal(s, signal.SIG_IGN)

    for s in signals:
        signal.signal(s, on_signal)
    # a blocked mask is inherited through fork/exec: a parent that blocked SIGINT (an rclpy
    # process spawning us, as the test suite does) would leave this process deaf to Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    return stop


class InputFirstSpinner:
    """Spins one node, taking its input messages and running its timers itself; the executor
    serves everything else (services, other subscriptions, guard conditions).

    rclpy's executors rebuild a wait set of every entity of the node (this lifecycle node has
    about 35: 12 parameter and lifecycle services, 16 waitables, timers, subscriptions) and
    dispatch each callback through a task, for every message: 0.6 ms per message on the 2-core
    CI machine, more than a 1 kHz input leaves, so a keep-last-1 input dropped 20-60 % of the
    messages in the benchmark. Here one rcl wait
    set holds the node's subscriptions, timers, services and clients; a ready subscription from
    ``inputs()`` is taken and its callback called directly, a ready timer from ``timers()`` is
    called directly (same callbacks, same thread, so callback groups keep their meaning); when
    anything else is ready (a request, another subscription such as ``/clock``) the executor is
    drained without blocking right after. It is also drained every ``service_period`` seconds
    regardless (guard conditions, waitables and QoS events are not in the wait set). The entity
    lists are re-read after each drain (only executor callbacks, e.g. a lifecycle transition,
    create or destroy entities).

    Uses the rcl wait set, ``take_message`` and ``call_timer`` that rclpy's own
    ``wait_for_message`` and executors use (Humble through Kilted); without them
    :meth:`spin_once` is ``executor.spin_once``.

    Args:
        node: the node (its entities are read from ``node.subscriptions`` etc.).
        executor: a single-threaded executor the node has been added to.
        inputs: the input subscriptions taken directly (message-only callbacks), in the order to
            take them when several are ready (sensors before the trigger: a step sees the newest).
        timers: the timers called directly (callbacks without arguments); default none.
        service_period: seconds between unconditional executor drains (each costs what one
            executor wait costs, ~0.6 ms here, so a message arriving then waits that long; what
            only they serve, QoS event logs and guard conditions, can wait a second).
    """

    def __init__(
        self,
        node: Any,
        executor: Executor,
        inputs: Callable[[], Sequence[Any]],
        timers: Callable[[], Sequence[Any]] | None = None,
        service_period: float = 1.0,
    ) -> None:
        if not service_period > 0.0:
            raise ValueError(f"service_period must be > 0 s, got {service_period}")
        self._node, self._executor, self._inputs = node, executor, inputs
        self._timers: Callable[[], Sequence[Any]] = timers if timers is not None else list
        self.service_period = float(service_period)
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation

            self._ws_cls: Any = rclpy_implementation.WaitSet
        except (ImportError, AttributeError):
            self._ws_cls = None
        self._ws: Any = None
        self._entities: tuple[list[Any], ...] = ([], [], [], [])
        self._direct: dict[int, Any] = {}  # subscription handle pointer -> subscription
        self._order: list[int] = []
        self._direct_timers: dict[int, Any] = {}
        self._next_drain = 0.0
        self.taken = 0  # messages taken directly (tests, benchmarks)
        self.timer_calls = 0
        self.drains = 0

    def _rebuild(self) -> None:
        n = self._node
        ents = (list(n.subscriptions), list(n.timers), list(n.services), list(n.clients))
        inputs = [s for s in self._inputs() if s in ents[0]]
        timers = [t for t in self._timers() if t in ents[1]]
        same = self._ws is not None and all(
            len(a) == len(b) and all(map(operator.is_, a, b)) for a, b in zip(ents, self._entities)
        )
        if not same:
            subs, tmrs, services, clients = self._entities = ents
            self._ws = self._ws_cls(len(subs), 0, len(tmrs), len(clients), len(services), 0, n.context.handle)
        self._direct = {s.handle.pointer: s for s in inputs}
        self._order = [s.handle.pointer for s in inputs]
        self._direct_timers = {t.handle.pointer: t for t in timers}

    def drain(self, limit: int = 1000) -> int:
        """Run every executor callback ready now (at most ``limit``), without blocking; returns how many."""
        ex = self._executor
        done = 0
        while done < limit:
            try:
                handler, _, _ = ex.wait_for_ready_callbacks(timeout_sec=0.0)
            except (TimeoutException, ShutdownException, ConditionReachedException):
                break
            handler()
            exc = handler.exception()
            if exc is not None:
                raise exc
            done += 1
        self.drains += 1
        self._next_drain = time.monotonic() + self.service_period
        if self._ws_cls is not None:
            self._rebuild()
        return done

    def spin_once(self, timeout_sec: float = 0.1) -> None:
        """Wait up to ``timeout_sec`` (and at most until the next drain) and handle what is ready."""
        if self._ws_cls is None:
            self._executor.spin_once(timeout_sec=timeout_sec)
            return
        now = time.monotonic()
        if self._ws is None or now >= self._next_drain:
            if self.drain():
                return  # callbacks ran: let the caller check for shutdown before waiting
            now = time.monotonic()
        ws = self._ws
        subs, timers, services, clients = self._entities
        ws.clear_entities()
        for s in subs:
            ws.add_subscription(s.handle)
        for t in timers:
            ws.add_timer(t.handle)
        for c in clients:
            ws.add_client(c.handle)
        for v in services:
            ws.add_service(v.handle)
        wait = max(0.0, min(timeout_sec, self._next_drain - now))
        ws.wait(int(wait * 1e9))
        ready = ws.get_ready_entities("subscription")
        ready_t = ws.get_ready_entities("timer")
        others = any(p not in self._direct for p in ready) or any(
            p not in self._direct_timers for p in ready_t
        )
        if ready:
            for ptr in self._order:
                if ptr in ready:
                    sub = self._direct[ptr]
                    got = sub.handle.take_message(sub.msg_type, sub.raw)
                    if got is not None:
                        self.taken += 1
                        sub.callback(got[0])
        for ptr in ready_t:
            tmr = self._direct_timers.get(ptr)
            if tmr is not None and not tmr.is_canceled():
                tmr.handle.call_timer()  # marks the period as served (the executor does the same)
                self.timer_calls += 1
                tmr.callback()
        if others or ws.get_ready_entities("service") or ws.get_ready_entities("client"):
            self.drain()
