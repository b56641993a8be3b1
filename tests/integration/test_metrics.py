"""Watching a shard (issue 12): its Prometheus metrics scraped over real HTTP from a real
server process move by exactly the calls made, and its JSON log lines name the shard,
method, principal and outcome of each call without an ID number, a code or an API key."""
from __future__ import annotations

import json
import os
import socket
import time
import urllib.request

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from turnstile.engine import demo
from tests.integration.conftest import start_server, stop_server, venue_day
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc, sales_pb2, sales_pb2_grpc

R = common_pb2.ScanReason
IN = common_pb2.IN
ID_NUMBER = "110101199003077777"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("data"))
    port = free_port()
    # one shard: shard k would serve its metrics on port+k, and only `port` is known free
    server = start_server(data, venue_day(), ("--shards", "1", "--metrics-port", str(port),
                                                  "--log-format", "json", "--log-level", "debug"))
    server.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield server
    if server.proc.poll() is None:
        assert "stopped" in stop_server(server)


def scrape(server) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from GET /metrics."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def calls_moved(before, after) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == "turnstile_calls_total")


def settled(server, before, calls: int, timeout: float = 5.0) -> dict:
    """A scrape once at least `calls` calls were counted since `before` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        after = scrape(server)
        if calls_moved(before, after) >= calls or time.monotonic() > deadline:
            return after
        time.sleep(0.05)


def value(samples, name, **labels) -> float:
    """A sample's value; 0 if absent (a labelled child appears at its first use)."""
    return samples.get((name, tuple(sorted({"shard": "0", **labels}.items()))), 0.0)


def at(server, hour, minute=0):
    return Timestamp(seconds=demo.local_time(server.day, hour, minute))


def demo_codes(server) -> list[str]:
    with open(os.path.join(server.data, "demo-tickets.txt")) as f:
        return f.read().split()


def sell(server, sales, principal: str, key: str, product="adult", hour=8, holders=None):
    h = sales.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=key, items=[
        sales_pb2.Item(product_id=product, slot_ids=[demo.slot_id("main", server.day, hour)],
                       qty=1)]), metadata=server.meta(principal), timeout=10)
    c = sales.Confirm(sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id=f"order-{key}",
        payment=sales_pb2.Payment(method="cash", amount_fen=h.amount_fen),
        holders=holders or []), metadata=server.meta(principal), timeout=10)
    return c


def test_metrics_move_by_exactly_the_calls_made(watched):
    server = watched
    a, b = demo_codes(server)
    ch = server.channel()
    gate, sales = gate_pb2_grpc.GateServiceStub(ch), sales_pb2_grpc.SalesServiceStub(ch)
    meta = server.meta("demo-gate")

    def verify(code, gate_id="north-1"):
        return gate.Verify(gate_pb2.VerifyRequest(code=code, gate_id=gate_id, direction=IN,
                                                  scan_time=at(server, 8, 40)),
                           metadata=meta, timeout=10).reason

    before = scrape(server)
    assert [verify(a), verify(a, "north-2"), verify("NOTACODE")] == \
        [R.Value("OK"), R.Value("ALREADY_USED"), R.Value("FORGED")]
    c = sell(server, sales, "demo-ota", "watch-1")
    assert len(c.tickets) == 1
    with pytest.raises(grpc.RpcError) as e:              # a gate may not sell
        sales.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="watch-x"),
                   metadata=meta, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:              # no key at all
        gate.Verify(gate_pb2.VerifyRequest(code=b, gate_id="north-1"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    batch = gate.VerifyBatch(gate_pb2.VerifyBatchRequest(
        codes=[b, b], gate_id="north-1", direction=IN,
        scan_time=at(server, 8, 45)), metadata=meta, timeout=10)
    assert list(batch.reasons) == [R.Value("OK"), R.Value("ALREADY_USED")]
    # an offline gate's upload: a scan the server admits too, and one it had refused
    # (ticket a was used online at 08:40): a conflict
    up = gate.UploadScans(gate_pb2.UploadScansRequest(gate_id="north-2", scans=[
        gate_pb2.OfflineScan(nonce="watch-n1", sequence=1, code=c.tickets[0].code, direction=IN,
                             scan_time=at(server, 8, 30), admitted=1, reason=R.Value("OK")),
        gate_pb2.OfflineScan(nonce="watch-n2", sequence=2, code=a, direction=IN,
                             scan_time=at(server, 8, 50), admitted=1, reason=R.Value("OK"))]),
        metadata=meta, timeout=10)
    statuses = [gate_pb2.UploadStatus.Name(r.status) for r in up.results]
    # a concentrator's stream of two batches (ticket c was admitted by that upload)
    stream = [gate_pb2.VerifyBatchRequest(codes=codes, gate_id="north-1", direction=IN,
                                          scan_time=at(server, 8, 55))
              for codes in ([c.tickets[0].code], ["NOTACODE2"])]
    assert [list(x.reasons) for x in gate.VerifyStream(iter(stream), metadata=meta, timeout=10)] \
        == [[R.Value("ALREADY_USED")], [R.Value("FORGED")]]
    with pytest.raises(grpc.RpcError) as e:              # a channel may not scan
        list(gate.VerifyStream(iter(stream), metadata=server.meta("demo-ota"), timeout=10))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch.close()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    calls = {("GateService", "Verify", "OK"): 3, ("GateService", "Verify", "UNAUTHENTICATED"): 1,
             ("SalesService", "Hold", "OK"): 1, ("SalesService", "Confirm", "OK"): 1,
             ("SalesService", "Hold", "PERMISSION_DENIED"): 1,
             ("GateService", "VerifyBatch", "OK"): 1, ("GateService", "UploadScans", "OK"): 1,
             ("GateService", "VerifyStream", "OK"): 1,
             ("GateService", "VerifyStream", "PERMISSION_DENIED"): 1}
    # grpc sends an aborted call's status before the handler's exception unwinds through
    # the counting interceptor: a scrape right after the client saw it may be a call short
    after = settled(server, before, sum(calls.values()))
    for (service, method, code), n in calls.items():
        assert moved("turnstile_calls_total", service=service, method=method, code=code) == n, \
            (service, method, code)
    # nothing else was counted: the counters add up to the calls made
    assert calls_moved(before, after) == sum(calls.values())
    for (service, method), n in {("GateService", "Verify"): 4, ("SalesService", "Hold"): 2,
                                 ("SalesService", "Confirm"): 1,
                                 ("GateService", "VerifyStream"): 2}.items():
        assert moved("turnstile_call_seconds_count", service=service, method=method) == n
        assert moved("turnstile_call_seconds_sum", service=service, method=method) > 0
        assert moved("turnstile_call_seconds_bucket", service=service, method=method,
                     le="+Inf") == n
    # scans by reason: Verify (OK, ALREADY_USED, FORGED), VerifyBatch (OK, ALREADY_USED)
    # and VerifyStream (ALREADY_USED, FORGED);
    # the unauthenticated Verify decided nothing
    assert {r: moved("turnstile_scans_total", reason=r)
            for r in ("OK", "ALREADY_USED", "FORGED", "UNKNOWN", "VOIDED")} == \
        {"OK": 2, "ALREADY_USED": 3, "FORGED": 2, "UNKNOWN": 0, "VOIDED": 0}
    assert moved("turnstile_holds_total") == 1          # the denied Hold held nothing
    assert moved("turnstile_sales_total") == 1
    assert moved("turnstile_refunds_total") == 0
    assert statuses == ["APPLIED", "CONFLICT"]
    assert {s: moved("turnstile_offline_scans_total", status=s)
            for s in ("APPLIED", "CONFLICT", "DUPLICATE")} == {"APPLIED": 1, "CONFLICT": 1,
                                                             "DUPLICATE": 0}
    # the writer: every mutation above went through a committed batch (the writer's own
    # background batches, hold expiry and pruning, may commit too, even mid-scrape)
    batches = moved("turnstile_batch_size_count")
    assert batches >= 1 and moved("turnstile_commit_seconds_count") >= 1
    assert moved("turnstile_batch_size_sum") >= batches
    assert moved("turnstile_commit_seconds_sum") > 0
    assert 0 < value(after, "turnstile_map_use_ratio") < 1
    assert ("turnstile_writer_queue_depth", (("shard", "0"),)) in after
    assert value(after, "turnstile_writer_queue_depth") >= 0
    assert ("turnstile_snapshot_failures_total", (("shard", "0"),)) in after
    # the supervisor's record of this shard: started once, never restarted
    assert ("turnstile_shard_restarts", (("shard", "0"),)) in after
    assert value(after, "turnstile_shard_restarts") == 0
    assert value(after, "turnstile_shard_crash_loop") == 0


def log_records(server, want, timeout=10.0) -> list[dict]:
    """The server's JSON log records, once `want(records)` holds (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for line in list(server.log):
            if line.startswith("{"):
                records.append(json.loads(line))
        if want(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_json_logs_name_the_call_never_a_secret(watched):
    server = watched
    ch = server.channel()
    gate, sales = gate_pb2_grpc.GateServiceStub(ch), sales_pb2_grpc.SalesServiceStub(ch)
    # a real-name ticket sold at the window and scanned by the holder's ID number
    c = sell(server, sales, "demo-window", "log-night", product="night",
             holders=[sales_pb2.Holders(id_numbers=[ID_NUMBER])])
    code = c.tickets[0].code
    r = gate.Verify(gate_pb2.VerifyRequest(id_number=ID_NUMBER, gate_id="north-1", direction=IN,
                                           scan_time=at(server, 8, 20)),
                    metadata=server.meta("demo-gate"), timeout=10)
    assert r.reason == R.Value("OK")
    assert gate.Verify(gate_pb2.VerifyRequest(code=code, gate_id="north-2", direction=IN,
                                              scan_time=at(server, 8, 25)),
                       metadata=server.meta("demo-gate"), timeout=10).reason == R.Value("ALREADY_USED")
    with pytest.raises(grpc.RpcError) as e:              # a gate may not sell
        sales.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="log-x"),
                   metadata=server.meta("demo-gate"), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch.close()

    def calls(records):
        return [x for x in records if x.get("logger") == "turnstile.calls"]

    def seen(records):
        got = calls(records)
        return (any(x["method"] == "Verify" and x["reason"] == "ALREADY_USED" for x in got)
                and any(x["outcome"] == "PERMISSION_DENIED" for x in got))

    records = calls(log_records(server, seen))
    mine = [(x["shard"], x["service"], x["method"], x["principal"], x["outcome"], x["reason"],
             x["level"]) for x in records]
    for want in [(0, "SalesService", "Hold", "demo-window", "OK", "", "INFO"),
                 (0, "SalesService", "Confirm", "demo-window", "OK", "", "INFO"),
                 (0, "GateService", "Verify", "demo-gate", "OK", "OK", "DEBUG"),
                 (0, "GateService", "Verify", "demo-gate", "OK", "ALREADY_USED", "DEBUG"),
                 (0, "SalesService", "Hold", "demo-gate", "PERMISSION_DENIED", "ROLE_NOT_ALLOWED",
                  "INFO")]:
        assert want in mine, (want, mine)
    assert all(isinstance(x["latency_ms"], (int, float)) and x["latency_ms"] >= 0 for x in records)
    # no line of the server's output (bar the one-time demo key listing on a new data dir)
    # holds the ID number, a ticket code or any principal's API key or its secret
    keys = list(server.keys.values())            # tsk_<key id>_<secret>: the secret may hold _
    assert sorted(server.keys) == ["admin", "demo-auditor", "demo-boats", "demo-finance", "demo-gate",
                                   "demo-operator", "demo-ota", "demo-viewer", "demo-window"], sorted(server.keys)
    assert all(k.startswith("tsk_") for k in keys)
    secrets = [ID_NUMBER, code, *keys, *(k.split("_", 2)[2] for k in keys)]
    assert min(map(len, secrets)) >= 16
    for line in server.log:
        if line.startswith("created principal "):
            continue
        for secret in secrets:
            assert secret not in line, line


def shard_pid(server, shard: int = 0) -> int:
    """The pid of the `serve-shard --shard N` child of the supervisor."""
    for task in os.listdir(f"/proc/{server.proc.pid}/task"):
        with open(f"/proc/{server.proc.pid}/task/{task}/children") as f:
            for pid in f.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    argv = c.read().split(b"\0")
                if b"serve-shard" in argv and argv[argv.index(b"--shard") + 1] == str(shard).encode():
                    return int(pid)
    raise LookupError(f"no process of shard {shard}")


def test_a_restarted_shard_shows_its_restarts_on_the_same_port(tmp_path):
    port = free_port()
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "1", "--metrics-port", str(port)))
    server.metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert value(scrape(server), "turnstile_shard_restarts") == 0
        first = shard_pid(server)
        os.kill(first, 9)
        deadline = time.monotonic() + 30
        while True:             # its metrics come back with the new process, on the same port
            try:
                samples = scrape(server)
                if value(samples, "turnstile_shard_restarts") == 1:
                    break
            except OSError:     # between the two processes: nothing listens
                pass
            assert time.monotonic() < deadline, "the shard's metrics did not come back"
            time.sleep(0.1)
        assert shard_pid(server) != first
        # a new process: its call counters start again from nothing
        assert not [k for k in samples if k[0] == "turnstile_calls_total"]
    finally:
        assert "stopped" in stop_server(server)
