"""A lease holder killed with SIGKILL mid-render (tests/takeover.py): the other
instance takes the metatile over within about LEASE_SECONDS and answers, with exactly
one more GetMap, instead of waiting out the dead holder's whole render budget."""

from __future__ import annotations

import pytest

from tests.faultwms import FaultWMS
from tests.takeover import sigkill_holder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def late_wms():
    wms = FaultWMS(mode="slow", slow_seconds=4.0).start()
    yield wms
    wms.stop()


def test_a_sigkilled_lease_holder_is_taken_over_within_15_s(moto_server, s3, late_wms, tmp_path):
    result = sigkill_holder(moto_server.url, s3, late_wms, tmp_path, lease_seconds=6.0)
    assert result.status == 200
    # The lease expires at most LEASE_SECONDS after its last renewal, the waiter reads
    # it at most 1 s later, then renders: 4 s of GetMap.
    assert result.answered_after_kill <= 15.0, result
    assert result.getmaps_after_kill == 1, result
