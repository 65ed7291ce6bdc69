"""Service calls that cannot hang: one bounded call, and "wait until the lifecycle node answers".

A ROS 2 service can be discovered before its reply path is matched; a request sent in that
window may never be answered (seen on loaded machines with every RMW we run). ``get_state`` is
idempotent, so :func:`wait_lifecycle_ready` asks it again until it answers, and only then may a
caller send the first, non-idempotent transition. The demo, ``scripts/faults.py`` and the ROS
tests all use these two functions, so the workaround lives in one place.

The other half: the ROS graph can fail to report a server that is there (rmw_fastrtps keeps
its graph cache from discovery messages and can miss some after many participants came and
went: ros2/rmw_fastrtps#792, #699; in CI one controller's ``get_state`` was never reported
available in 60 s). A request needs matched DDS endpoints, not the graph cache, so both
functions send it anyway once ``wait_for_service`` has failed for a while (``blind_after``),
and only a missing answer is an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ServiceCallError", "call_service", "wait_lifecycle_ready"]


class ServiceCallError(RuntimeError):
    """A service was not offered, or did not answer, within the time allowed."""


def _spin_until(spin_once: Callable[[], Any], cond: Callable[[], bool], end: float) -> bool:
    while not cond():
        if time.monotonic() >= end:
            return cond()
        spin_once()
    return True


def call_service(client: Any, request: Any, spin_once: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Send ``request`` on ``client`` and spin (``spin_once``) until the reply; returns it.

    The request goes out once the graph reports the service, or after half of ``timeout``
    regardless (module docstring); it is sent exactly once. Raises :class:`ServiceCallError`
    naming the service when no answer came within ``timeout`` seconds (the pending request is
    dropped, nothing is left waiting).
    """
    end = time.monotonic() + timeout
    offered = client.wait_for_service(timeout_sec=timeout / 2.0)
    fut = client.call_async(request)
    if not _spin_until(spin_once, fut.done, end):
        client.remove_pending_request(fut)
        why = "did not answer" if offered else "was never reported available and did not answer"
        raise ServiceCallError(f"service {client.srv_name} {why} within {timeout:g} s")
    return fut.result()


def wait_lifecycle_ready(
    get_state_client: Any,
    spin_once: Callable[[], Any],
    timeout: float = 60.0,
    retry: float = 2.0,
    blind_after: float = 5.0,
) -> str:
    """Ask a lifecycle node's ``get_state`` until it answers; returns the state's label.

    ``get_state_client`` is a client of ``lifecycle_msgs/srv/GetState``. Each unanswered request
    is dropped and asked again after ``retry`` seconds; after ``blind_after`` seconds it is asked
    even while the graph does not report the service (module docstring). Raises
    :class:`ServiceCallError` after ``timeout`` seconds without an answer.
    """
    from lifecycle_msgs.srv import GetState

    start = time.monotonic()
    end = start + timeout
    while time.monotonic() < end:
        wait = min(1.0, max(0.0, end - time.monotonic()))
        if not get_state_client.wait_for_service(timeout_sec=wait) and time.monotonic() - start < blind_after:
            continue
        fut = get_state_client.call_async(GetState.Request())
        if _spin_until(spin_once, fut.done, min(end, time.monotonic() + retry)):
            return str(fut.result().current_state.label)
        get_state_client.remove_pending_request(fut)
    raise ServiceCallError(f"{get_state_client.srv_name} did not answer within {timeout:g} s")
