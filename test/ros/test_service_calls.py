"""``lnn_control.ros.service_calls`` over real DDS: answers come back, a server the ROS graph
does not report (rmw_fastrtps#792; one CI run) is still asked and answers, and a missing server
is an error within the time allowed, naming the service."""

from __future__ import annotations

import time
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import State  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from lnn_control.ros.service_calls import ServiceCallError, call_service, wait_lifecycle_ready  # noqa: E402


class Rig:
    """A server node answering ``/svc_test/get_state`` and a client node, one executor."""

    def __init__(self, serve: bool = True) -> None:
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.nodes = [rclpy.create_node("svc_test_client", context=self.ctx)]
        self.requests = 0
        if serve:
            srv = rclpy.create_node("svc_test", context=self.ctx)
            srv.create_service(GetState, "/svc_test/get_state", self._answer)
            self.nodes.append(srv)
        for n in self.nodes:
            self.ex.add_node(n)
        self.client = self.nodes[0].create_client(GetState, "/svc_test/get_state")

    def _answer(self, req: Any, resp: Any) -> Any:
        self.requests += 1
        resp.current_state.id = State.PRIMARY_STATE_UNCONFIGURED
        resp.current_state.label = "unconfigured"
        return resp

    def spin_once(self) -> None:
        self.ex.spin_once(timeout_sec=0.01)

    def blind(self) -> None:
        """The graph never reports the server (what the RMW's cache did in CI); DDS still works.
        ``wait_for_service`` waits as the real one does, then says no."""

        def never(timeout_sec: float | None = None) -> bool:
            time.sleep(min(timeout_sec or 0.0, 0.2))
            return False

        self.client.wait_for_service = never  # type: ignore[method-assign]

    def close(self) -> None:
        self.ex.shutdown()
        for n in self.nodes:
            n.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def rig() -> Any:
    r = Rig()
    yield r
    r.close()


def _matched(r: Rig) -> None:
    """Wait until the client's DDS endpoints match the server's (the graph is blinded afterwards)."""
    assert r.client.wait_for_service(timeout_sec=20.0), "server not discovered"


def test_lifecycle_ready_and_call_service_answer(rig: Rig) -> None:
    assert wait_lifecycle_ready(rig.client, rig.spin_once, timeout=20.0) == "unconfigured"
    reply = call_service(rig.client, GetState.Request(), rig.spin_once, timeout=10.0)
    assert reply.current_state.label == "unconfigured"
    assert rig.requests == 2


def test_a_server_the_graph_does_not_report_is_asked_anyway(rig: Rig) -> None:
    _matched(rig)
    rig.spin_once()
    rig.blind()
    t0 = time.monotonic()
    assert wait_lifecycle_ready(rig.client, rig.spin_once, timeout=20.0, blind_after=1.0) == "unconfigured"
    assert 1.0 <= time.monotonic() - t0 < 10.0  # asked once blind_after had passed, answered
    reply = call_service(rig.client, GetState.Request(), rig.spin_once, timeout=4.0)
    assert reply.current_state.label == "unconfigured"
    assert rig.requests == 2  # call_service sends its (possibly non-idempotent) request once


def test_a_missing_server_is_an_error_naming_it() -> None:
    r = Rig(serve=False)
    try:
        t0 = time.monotonic()
        with pytest.raises(ServiceCallError, match="/svc_test/get_state did not answer within 3 s"):
            wait_lifecycle_ready(r.client, r.spin_once, timeout=3.0, retry=0.5, blind_after=1.0)
        assert time.monotonic() - t0 < 6.0
        with pytest.raises(ServiceCallError, match="never reported available and did not answer within 2 s"):
            call_service(r.client, GetState.Request(), r.spin_once, timeout=2.0)
        assert not r.client._pending_requests  # the unanswered request was dropped
    finally:
        r.close()
