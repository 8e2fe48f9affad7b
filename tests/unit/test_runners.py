"""workers/runners.py: HTTP/2 streams' jobs in reusable greenlets, and kills that reach
the job they were meant for and no other."""

from __future__ import annotations

import gevent
import greenlet
from gevent.event import Event

from tests.support.collector import collector_off
from workers.runners import Runners, current_job


def test_a_finished_jobs_greenlet_runs_the_next_job() -> None:
    runners = Runners()
    seen: list[object] = []
    first = runners.spawn(lambda: seen.append(greenlet.getcurrent()))
    gevent.sleep(0)
    assert first.dead and runners.idle == 1
    runners.spawn(lambda: seen.append(greenlet.getcurrent()))
    gevent.sleep(0)
    assert len(seen) == 2 and seen[0] is seen[1]
    assert seen[0] is not greenlet.getcurrent()


def test_idle_greenlets_are_capped() -> None:
    runners = Runners(max_idle=3)
    gate = Event()
    jobs = [runners.spawn(gate.wait) for _ in range(5)]
    gevent.sleep(0)
    assert runners.idle == 0 and not any(job.dead for job in jobs)
    gate.set()
    gevent.sleep(0)
    assert all(job.dead for job in jobs)
    assert runners.idle == 3


def test_a_greenlet_beyond_the_cap_is_freed_without_the_collector() -> None:
    """A runner that ends because enough are parked leaves no reference cycle behind
    (its greenlet names it for ``current_job``): it is freed as it ends, not at the next
    full collection. Under h2load a worker kept ~1,600 such dead pairs between them."""
    import weakref

    runners = Runners(max_idle=0)
    ended: list[weakref.ref[greenlet.greenlet]] = []
    with collector_off():
        job = runners.spawn(lambda: ended.append(weakref.ref(greenlet.getcurrent())))
        gevent.sleep(0)
        assert job.dead and runners.idle == 0
        assert ended and ended[0]() is None


def test_a_kill_raises_in_the_running_job_and_its_greenlet_goes_on() -> None:
    runners = Runners()
    caught: list[BaseException] = []

    def wait_forever() -> None:
        try:
            Event().wait()
        except TimeoutError as exc:
            caught.append(exc)
            raise

    job = runners.spawn(wait_forever)
    gevent.sleep(0)
    assert job.started and not job.dead
    job.kill(TimeoutError("timed out"))
    gevent.sleep(0)
    assert job.dead and [str(e) for e in caught] == ["timed out"]
    after = runners.spawn(lambda: None)
    gevent.sleep(0)
    assert after.dead and runners.idle == 1


def test_a_kill_for_an_ended_job_never_reaches_the_next_one() -> None:
    """The sweeper (or a reset) may aim at a job that ends before the kill lands; the
    same greenlet may already run another job by then."""
    runners = Runners()
    ran_in: list[object] = []
    first = runners.spawn(lambda: ran_in.append(greenlet.getcurrent()))
    gevent.sleep(0)
    assert first.dead
    gate = Event()
    done: list[str] = []

    def second_job() -> None:
        ran_in.append(greenlet.getcurrent())
        gate.wait()
        done.append("second")

    second = runners.spawn(second_job)
    gevent.sleep(0)
    assert second.started and ran_in[0] is ran_in[1]  # the same greenlet
    first._throw(TimeoutError("late"))  # the kill's callback, landing now
    first.kill(TimeoutError("late"))
    gevent.sleep(0)
    assert not second.dead
    gate.set()
    gevent.sleep(0)
    assert second.dead and done == ["second"]


def test_a_job_killed_before_it_starts_never_runs() -> None:
    runners = Runners()
    ran: list[int] = []
    job = runners.spawn(lambda: ran.append(1))
    job.kill()
    assert job.dead
    gevent.sleep(0)
    assert ran == [] and not job.started
    assert runners.idle == 1  # its greenlet parked for the next job


def test_an_uncaught_error_is_reported_and_the_greenlet_goes_on() -> None:
    runners = Runners()
    hub = gevent.get_hub()
    reported: list[type[BaseException]] = []
    original = hub.handle_error
    hub.handle_error = lambda context, kind, value, tb: reported.append(kind)
    try:
        def fail() -> None:
            raise ValueError("boom")
        job = runners.spawn(fail)
        gevent.sleep(0)
    finally:
        hub.handle_error = original
    assert job.dead and reported == [ValueError]
    again = runners.spawn(lambda: None)
    gevent.sleep(0)
    assert again.dead and runners.idle == 1


def test_a_job_knows_itself_as_the_current_job() -> None:
    runners = Runners()
    seen: list[object] = []
    job = runners.spawn(lambda: seen.append(current_job()))
    gevent.sleep(0)
    assert seen == [job]
    assert current_job() is None  # this greenlet is no runner's


def test_spawn_passes_arguments() -> None:
    runners = Runners()
    got: list[tuple[int, str]] = []
    runners.spawn(lambda a, b: got.append((a, b)), 1, "x")
    gevent.sleep(0)
    assert got == [(1, "x")]
