"""Admission control without a cluster: the pixel budget and the deadline estimate."""

from __future__ import annotations

import pytest

from deployments.admission import DeadlineAdmission, PixelBudget, Reservation
from deployments.errors import OverloadedError


def test_pixel_budget_refuses_what_does_not_fit_and_frees_on_release() -> None:
    budget = PixelBudget(capacity=100, retry_after_s=3)
    first, second = Reservation(budget), Reservation(budget)
    first.acquire(60)
    with pytest.raises(OverloadedError) as info:
        second.acquire(50)
    assert info.value.retry_after_s == 3 and "60 of 100" in info.value.message
    first.release()
    first.release()  # twice is harmless
    second.acquire(100)
    assert budget.in_use == 100
    second.release()
    assert budget.in_use == 0


def test_deadline_admission_measures_the_service_interval_while_busy() -> None:
    admission = DeadlineAdmission(share=0.5, smoothing=1.0)
    assert admission.admit(timeout_s=10, now=0.0)  # nothing measured: admit
    tokens = [admission.started(0.0) for _ in range(5)]
    for token, t in zip(tokens, (1.0, 2.0, 3.0), strict=False):  # one per second
        admission.finished(token, t, served=True)
    assert admission.replica_interval_s == pytest.approx(1.0)
    assert admission.in_flight == 2
    # the two left have waited 3 s: 1.5 s each, more than the measured 1 s
    assert admission.predicted_wait_s(now=3.0) == pytest.approx(4.5)
    assert admission.admit(timeout_s=9, now=3.0)  # 4.5 s <= 0.5 x 9
    assert not admission.admit(timeout_s=8, now=3.0)  # 4.5 s > 4 s
    admission.finished(tokens[3], 3.1, served=False)  # a fast failure: no service time
    assert admission.replica_interval_s == pytest.approx(1.0)
    admission.finished(tokens[4], 4.0, served=True)
    assert admission.in_flight == 0
    assert admission.admit(timeout_s=0.1, now=4.0), "with nothing in flight a request goes"


def test_a_stalled_group_is_seen_before_anything_completes() -> None:
    """A replica dies: no completions, but the requests in flight age."""
    admission = DeadlineAdmission(share=0.5, smoothing=1.0)
    a, b = admission.started(0.0), admission.started(0.0)
    admission.finished(a, 1.0, served=True)
    admission.finished(b, 2.0, served=True)  # interval 1 s
    for _ in range(3):
        admission.started(2.0)
    assert admission.admit(timeout_s=10, now=2.5)  # 4 x 1 s <= 5 s
    # 6 s later nothing has completed: 6 s over 3 in flight = 2 s each, 4 x 2 s > 5 s
    assert admission.predicted_wait_s(now=8.0) == pytest.approx(8.0)
    assert not admission.admit(timeout_s=10, now=8.0)


def test_an_idle_gap_is_not_taken_for_service_time() -> None:
    admission = DeadlineAdmission(smoothing=1.0)
    admission.finished(admission.started(0.0), 1.0, served=True)  # alone: no interval
    admission.finished(admission.started(50.0), 60.0, served=True)  # still alone
    assert admission.replica_interval_s is None


def test_the_estimate_follows_the_live_replicas() -> None:
    """Measured with two replicas; one dies: the same queue now takes twice as long."""
    admission = DeadlineAdmission(share=0.5, smoothing=1.0)
    tokens = [admission.started(0.0) for _ in range(4)]
    admission.finished(tokens[0], 0.5, served=True, replicas=2)
    admission.finished(tokens[1], 1.0, served=True, replicas=2)  # 0.5 s apart, 2 replicas
    assert admission.replica_interval_s == pytest.approx(1.0)
    assert admission.predicted_wait_s(now=1.0, replicas=2) == pytest.approx(1.5)  # 3 x 0.5
    assert admission.predicted_wait_s(now=1.0, replicas=1) == pytest.approx(3.0)  # 3 x 1
    assert admission.admit(timeout_s=4, now=1.0, replicas=2)  # 1.5 <= 2
    assert not admission.admit(timeout_s=4, now=1.0, replicas=1)  # 3 > 2
    # no live replica (a restart): one is expected back, the estimate stays finite
    assert admission.predicted_wait_s(now=1.0, replicas=0) == pytest.approx(3.0)


def test_hopeless_names_queued_requests_that_cannot_finish_in_time() -> None:
    admission = DeadlineAdmission(smoothing=1.0)
    first, second = admission.started(0.0), admission.started(0.0)
    admission.finished(first, 1.0, served=True, replicas=2)
    admission.finished(second, 2.0, served=True, replicas=2)  # one replica: 2 s a request
    queue = [admission.started(2.0) for _ in range(6)]
    deadline = 10.0
    # both replicas live: 1 s apart, position p done at 2 + (p + 1): all by 8 s
    assert not any(admission.hopeless(t, 2.0, deadline, replicas=2) for t in queue)
    # one replica left: 2 s apart; positions 4 and 5 would end at 12 and 14 s
    verdicts = [admission.hopeless(t, 2.0, deadline, replicas=1) for t in queue]
    assert verdicts == [False, False, False, False, True, True]
    # none live: the front request (likely being served) is never named
    assert not admission.hopeless(queue[0], 9.9, deadline, replicas=0)
    assert admission.hopeless(queue[1], 9.9, deadline, replicas=0)
    # unknown tokens and an unmeasured group say nothing
    admission.finished(queue[5], 3.0, served=False)
    assert not admission.hopeless(queue[5], 3.0, deadline, replicas=1)
    assert not DeadlineAdmission().hopeless(0, 0.0, 1.0, replicas=1)
