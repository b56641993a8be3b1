"""A real server process on 127.0.0.1:0 over a real data dir (DESIGN.md 10): the harness
of server/testing.py, with the session's master key."""
from __future__ import annotations

import datetime as dt
import time
import os

import pytest

from turnstile.clients.base import ApiError

from turnstile.engine import demo
from turnstile.server import testing
from turnstile.server.testing import Server, kill_server, stop_server  # noqa: F401  (the tests use them from here)
from tests.conftest import MASTER_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Stubs:
    """Raw stubs of every service over one channel to a server."""

    def __init__(self, server: Server):
        from turnstile.v1 import (admin_pb2_grpc, gate_pb2_grpc, inventory_pb2_grpc,
                                  member_pb2_grpc, report_pb2_grpc, sales_pb2_grpc)
        self.server = server
        self.ch = server.channel()
        self.gate = gate_pb2_grpc.GateServiceStub(self.ch)
        self.sales = sales_pb2_grpc.SalesServiceStub(self.ch)
        self.inv = inventory_pb2_grpc.InventoryServiceStub(self.ch)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.ch)
        self.report = report_pb2_grpc.ReportServiceStub(self.ch)
        self.member = member_pb2_grpc.MemberServiceStub(self.ch)


def master_key_file(data: str) -> str:
    """The key file beside `data` (as `make run` keeps one), holding the session's master
    key (tests/conftest.py); made mode 0600 if absent."""
    return testing.master_key_file(data, MASTER_KEY)


def start_server(data: str, day: dt.date, args: tuple = (), env: dict | None = None,
                 **kw) -> Server:
    """server.testing.start_server with the session's master key, as an operator gives
    it: a file beside the data dir, not the session's environment variable. Seeds the
    demo (from `day`) if `data` is empty; by default the server's clock is the morning
    of `day` (day_clock), with clock=False the machine's."""
    return testing.start_server(data, day, args, env, master_key=MASTER_KEY, **kw)


AUTH_CACHE_S = 0.2      # the servers' key caches (--auth-cache-s): a revocation is waited out in 0.2 s


def venue_day() -> dt.date:
    """Today at the demo venue (UTC+8), by the machine's clock: the day a server's demo is
    seeded for and its demo tickets sold (`turnstile demo`). The machine's own date
    (dt.date.today(), UTC here) is the day before from 16:00 UTC: a server started on
    that day would find the demo's tickets not yet valid and scans of now a day ahead."""
    return demo.venue_today(time.time())


def plain_weekday(day: dt.date) -> dt.date:
    """`day`, or the next day after it that the demo prices at its weekday prices: not a
    Saturday or Sunday, not in its holiday calendar (engine/demo.py HOLIDAYS). The tests
    that assert the demo's base and channel prices run the server on such a day, so they
    pass on any day they are run."""
    while day.weekday() >= 5 or day.isoformat() in demo.HOLIDAYS:
        day += dt.timedelta(days=1)
    return day


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("data"))
    s = start_server(data, plain_weekday(venue_day()), auth_cache_s=AUTH_CACHE_S)
    yield s
    if s.proc.poll() is None:
        out = stop_server(s)
        assert "stopped" in out


def api_error(fn, *args, **kw) -> ApiError:
    """The ApiError a client call must raise."""
    with pytest.raises(ApiError) as e:
        fn(*args, **kw)
    return e.value


def refused(fn, *args, **kw) -> tuple:
    """(status name, ErrorInfo reason, field) of a client call that must be refused."""
    e = api_error(fn, *args, **kw)
    return e.code.name, e.reason, e.field
