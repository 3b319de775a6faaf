"""The single-flight primitive and the bounded background pool: leader failure,
waiter timeout, backlog and drain, driven by events rather than sleeps."""

import io
import threading

import pytest
import responses
from PIL import Image

from s3maptiler.config import load_settings
from s3maptiler.render.errors import WMSExceptionReport, WMSTimeout
from s3maptiler.render.guard import WMSUnavailable
from s3maptiler.render.wms import WMSClient
from s3maptiler.service.background import BoundedPool
from s3maptiler.service.singleflight import (
    RenderFailed,
    SingleFlight,
    WaitTimeout,
    failure_record,
    from_record,
    shared_failure,
    wait_for,
)
from s3maptiler.service.tilepath import TileService
from s3maptiler.storage.stores import LocalStore
from s3maptiler.storage.uploads import UploadPool

WMS = "http://wms.test/mapserv"
EVENT_WAIT = 10  # seconds: only reached when a test is broken


def test_the_first_caller_leads_and_the_key_is_forgotten_once_settled():
    flights = SingleFlight()
    future, leader = flights.join("m")
    again, second = flights.join("m")
    assert leader and not second and again is future
    future.set_result(42)
    assert wait_for(again, 0, "m") == 42
    _, leads_anew = flights.join("m")
    assert leads_anew and len(flights) == 1


@pytest.mark.parametrize(
    "failure, status, kind",
    [
        (WMSExceptionReport("LayerNotDefined: roads"), 502, "exception_report"),
        (WMSTimeout("WMS did not answer within 30 s"), 504, "timeout"),
        (WMSUnavailable("WMS busy", retry_after=1), 503, None),
        (KeyError("png"), 502, "render"),  # a bug in the leader is a 502, not a 500
    ],
)
def test_a_waiter_gets_the_leaders_failure_as_its_own_http_error(failure, status, kind):
    flights = SingleFlight()
    future, _ = flights.join("m")
    waiter, _ = flights.join("m")
    future.set_exception(failure)
    with pytest.raises(Exception) as raised:
        wait_for(waiter, EVENT_WAIT, "metatile 15/1-4/1-4")
    copy = raised.value
    assert copy is not failure  # each waiter raises its own exception object
    assert copy.status == status
    if kind is not None:
        assert copy.kind == kind
    assert "\n" not in str(copy)
    # The same failure, written by one process and read by another.
    again = from_record(failure_record(failure))
    assert again.status == status and str(getattr(again, "reason", again)) == str(
        getattr(shared_failure(failure), "reason", copy)
    )


def test_a_waiter_that_runs_out_of_time_gets_a_504_not_a_render():
    flights = SingleFlight()
    future, _ = flights.join("m")  # a leader that never finishes
    with pytest.raises(WaitTimeout) as raised:
        wait_for(future, 0.0, "metatile 15/1-4/1-4")
    assert raised.value.status == 504
    assert "metatile 15/1-4/1-4" in str(raised.value)


def test_waiters_wait_as_long_as_the_leader_may_take():
    """The old wait (connect + read + 1 s) was shorter than one GetMap with retries."""
    settings = load_settings(
        {"WMS_SERVER": WMS, "MAP_LAYERS": "roads", "WMS_RETRIES": "2", "WMS_TIMEOUT": "30"},
        dotenv_path=None,
    )
    wms = WMSClient(connect_timeout=3.05, read_timeout=30, retries=2)
    service = TileService(settings, LocalStore("unused"), wms, UploadPool(LocalStore("unused")))
    runtime = service.layers[0]
    every_attempt = 3 * (3.05 + 30)
    assert service.renderer.budget(runtime) > every_attempt + settings.wms_queue_wait
    assert service.patience(runtime) >= 2 * service.renderer.budget(runtime)


# --------------------------------------------------------------------------- the background pool


def test_the_background_pool_runs_inline_once_its_backlog_is_full():
    pool = BoundedPool(threads=1, backlog=1)
    started, release = threading.Event(), threading.Event()
    ran_on = {}

    def blocking():
        ran_on["first"] = threading.get_ident()
        started.set()
        release.wait(EVENT_WAIT)

    pool.run(blocking, lambda: None)
    assert started.wait(EVENT_WAIT)
    pool.run(lambda: ran_on.setdefault("second", threading.get_ident()), lambda: None)
    assert ran_on["second"] == threading.get_ident()  # no room: the caller encoded it
    assert ran_on["first"] != threading.get_ident()
    release.set()


def test_drain_keeps_its_deadline_and_abandons_what_did_not_start():
    pool = BoundedPool(threads=1, backlog=4)
    started, release = threading.Event(), threading.Event()
    abandoned = []
    pool.run(lambda: (started.set(), release.wait(EVENT_WAIT)), lambda: abandoned.append(1))
    assert started.wait(EVENT_WAIT)
    pool.run(lambda: pytest.fail("must not run after drain"), lambda: abandoned.append(2))
    finished = threading.Event()
    threading.Thread(target=lambda: (pool.drain(deadline=0), finished.set())).start()
    assert finished.wait(EVENT_WAIT)  # did not wait for the running job
    assert abandoned == [2]
    release.set()


# --------------------------------------------------------------------------- the service


def png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def make_service(tmp_path, **env):
    settings = load_settings(
        {
            "WMS_SERVER": WMS,
            "MAP_LAYERS": "roads",
            "WMS_RETRIES": "0",
            "METATILE": "2x2",
            "META_BUFFER": "0",
            "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
            **env,
        },
        dotenv_path=None,
    )
    store = LocalStore(settings.local_cache_dir)
    wms = WMSClient(retries=0)
    return TileService(settings, store, wms, UploadPool(store, workers=1))


def test_a_waiter_whose_leader_fails_answers_502_and_nothing_is_stored(tmp_path):
    service = make_service(tmp_path)
    joined = threading.Event()
    join = service._metatiles.join

    def noting_join(key):
        future, leader = join(key)
        if not leader:
            joined.set()
        return future, leader

    service._metatiles.join = noting_join
    report = (
        b"<ServiceExceptionReport><ServiceException code='LayerNotDefined'>no roads"
        b"</ServiceException></ServiceExceptionReport>"
    )
    outcomes = {}

    def slow_exception(request):
        assert joined.wait(EVENT_WAIT)  # the waiter is waiting before the leader fails
        return 200, {"Content-Type": "application/vnd.ogc.se_xml"}, report

    with responses.RequestsMock() as wms:
        wms.add_callback(responses.GET, WMS, callback=slow_exception)

        def ask(name, path):
            request = service.addresses.resolve(path)
            try:
                service.get(request, known_miss=True)
            except Exception as exc:  # noqa: BLE001 - the outcome is what we check
                outcomes[name] = exc

        leader = threading.Thread(target=ask, args=("leader", "tiles/1/0/0.png"))
        leader.start()
        waiter = threading.Thread(target=ask, args=("waiter", "tiles/1/1/1.png"))
        waiter.start()
        leader.join(EVENT_WAIT)
        waiter.join(EVENT_WAIT)
    assert isinstance(outcomes["leader"], WMSExceptionReport)
    assert isinstance(outcomes["waiter"], WMSExceptionReport)
    assert outcomes["waiter"].status == 502 and "no roads" in outcomes["waiter"].reason
    assert service.uploads.stats()["submitted"] == 0


def test_a_waiter_of_a_metatile_abandoned_by_drain_gets_a_502(tmp_path):
    service = make_service(tmp_path)
    service._background = BoundedPool(threads=1, backlog=4)
    started, release = threading.Event(), threading.Event()
    service._background.run(lambda: (started.set(), release.wait(EVENT_WAIT)), lambda: None)
    assert started.wait(EVENT_WAIT)  # the one pool thread is busy: the next job queues
    with responses.RequestsMock() as wms:
        wms.get(WMS, body=png(512), content_type="image/png")
        first = service.get(service.addresses.resolve("tiles/1/0/0.png"), known_miss=True)
    assert first.source == "render"
    future, leader = service._metatiles.join(next(iter(service._metatiles._flights)))
    assert not leader  # the render is still in flight: its rest waits for the pool
    service.drain(0)
    with pytest.raises(RenderFailed) as raised:
        wait_for(future, EVENT_WAIT, "the metatile")
    assert raised.value.status == 502
    release.set()
