"""The spool: workers of one host (real forked processes) share a metatile's render."""

import logging
import multiprocessing
import os
import time

import pytest

from s3maptiler.render.errors import WMSTimeout
from s3maptiler.service.bundle import RenderedTiles
from s3maptiler.service.singleflight import WaitTimeout
from s3maptiler.service.spool import Spool
from s3maptiler.tiles.grids import Tile

FLIGHT = "ab" * 20  # a metatile id, as service.metatile_flight makes them
EVENT_WAIT = 20  # seconds: only reached when a test is broken
RENDER = RenderedTiles("image/png", {Tile(0, 0, 1): b"tile 0", Tile(1, 0, 1): b"tile 1"})

fork = multiprocessing.get_context("fork")


def later() -> float:
    return time.monotonic() + EVENT_WAIT


def wait_in_child(directory, entered, results, since):
    """A second worker: ask for the metatile's turn and report what it got."""
    spool = Spool(directory)
    entered.set()
    try:
        turn = spool.turn(FLIGHT, later(), since=since)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(("failed", type(exc).__name__, getattr(exc, "status", None), str(exc)))
        return
    if turn.found is not None:
        results.put(("found", turn.found.tiles))
    else:
        results.put(("held", turn.held))
        turn.release()


def start_child(directory, since=None):
    entered, results = fork.Event(), fork.Queue()
    child = fork.Process(target=wait_in_child, args=(directory, entered, results, since))
    child.start()
    assert entered.wait(EVENT_WAIT)
    return child, results


def test_a_waiting_worker_reads_the_render_the_leader_publishes(tmp_path):
    spool = Spool(tmp_path)
    turn = spool.turn(FLIGHT, later())
    assert turn.held and turn.found is None
    child, results = start_child(tmp_path)
    spool.publish(FLIGHT, RENDER)
    turn.release()
    assert results.get(timeout=EVENT_WAIT) == ("found", RENDER.tiles)
    child.join(EVENT_WAIT)


def test_workers_that_waited_answer_with_the_leaders_failure_later_ones_lead(tmp_path):
    spool = Spool(tmp_path)
    turn = spool.turn(FLIGHT, later())
    child, results = start_child(tmp_path, since=time.time())
    spool.publish_failure(FLIGHT, WMSTimeout("WMS did not answer within 30 s"))
    outcome = results.get(timeout=EVENT_WAIT)
    turn.release()
    assert outcome == ("failed", "WMSTimeout", 504, "WMS did not answer within 30 s")
    child.join(EVENT_WAIT)
    # A request that comes after the failure is not answered with it: it tries afresh.
    again = spool.turn(FLIGHT, later())
    assert again.held and again.found is None
    again.release()


def test_a_render_older_than_the_ttl_is_not_served(tmp_path):
    spool = Spool(tmp_path, ttl=30)
    spool.publish(FLIGHT, RENDER)
    fresh = spool.turn(FLIGHT, later())
    assert fresh.found == RENDER and not fresh.held
    spooled = tmp_path / FLIGHT[:2] / FLIGHT
    old = time.time() - 31
    os.utime(spooled, (old, old))
    stale = spool.turn(FLIGHT, later())
    assert stale.held and stale.found is None
    stale.release()


def hold_and_die(directory, held):
    turn = Spool(directory).turn(FLIGHT, later())
    held.set() if turn.held else None
    os._exit(0)  # a worker killed mid-render: it never releases


def test_a_dead_workers_lock_is_free_at_once(tmp_path):
    held = fork.Event()
    child = fork.Process(target=hold_and_die, args=(tmp_path, held))
    child.start()
    assert held.wait(EVENT_WAIT)
    child.join(EVENT_WAIT)
    turn = Spool(tmp_path).turn(FLIGHT, time.monotonic() + 1)
    assert turn.held  # the kernel dropped the dead process's record lock
    turn.release()


def test_a_waiter_gives_up_at_its_deadline(tmp_path):
    spool = Spool(tmp_path)
    turn = spool.turn(FLIGHT, later())
    child_deadline = fork.Queue()

    def wait_briefly(directory, results):
        try:
            Spool(directory).turn(FLIGHT, time.monotonic() + 0.2)
        except WaitTimeout as exc:
            results.put(exc.status)

    child = fork.Process(target=wait_briefly, args=(tmp_path, child_deadline))
    child.start()
    assert child_deadline.get(timeout=EVENT_WAIT) == 504
    child.join(EVENT_WAIT)
    turn.release()


def test_an_unusable_spool_lets_every_worker_render(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool should be")
    spool = Spool(blocked)
    with caplog.at_level(logging.WARNING):
        first, second = spool.turn(FLIGHT, later()), spool.turn(FLIGHT, later())
    assert first.held and second.held
    assert len([r for r in caplog.records if "unusable" in r.message]) == 1
    spool.publish(FLIGHT, RENDER)  # nothing to write to: ignored, not raised


@pytest.mark.parametrize("blob", [b"", b"not json\n", b'{"state":"done","tiles":[[0,0,1,99]]}\n'])
def test_an_unreadable_entry_is_ignored(tmp_path, blob):
    (tmp_path / FLIGHT[:2]).mkdir()
    (tmp_path / FLIGHT[:2] / FLIGHT).write_bytes(blob)
    turn = Spool(tmp_path).turn(FLIGHT, later())
    assert turn.held
    turn.release()
