"""What one shard process shows: Prometheus metrics (prometheus-client) and a log line per call.

`turnstile serve --metrics-port P` serves shard k's metrics on http://METRICS_HOST:P+k/metrics
(127.0.0.1 by default; 0 = no metrics endpoint). Each shard process keeps its own
registry (never the process-global default), every series labelled with its `shard`:

    turnstile_calls_total{service,method,code}     calls answered, by gRPC status code
    turnstile_call_seconds{service,method}         call latency (a stream: its whole life)
    turnstile_scans_total{reason}                  scans answered (Verify, VerifyBatch,
                                                   VerifyStream) by VerifyResponse reason
                                                   (a retried scan_id or batch_id counts again)
    turnstile_holds_total, turnstile_sales_total,  Hold, Confirm and Refund calls answered
    turnstile_refunds_total                        OK (an idempotent retry counts again)
    turnstile_offline_scans_total{status}          uploaded offline scans (UploadScans) by
                                                   UploadStatus: APPLIED, DUPLICATE, CONFLICT
    turnstile_writer_queue_depth                   commands waiting for the writer (at scrape)
    turnstile_batch_size                           commands per committed batch
    turnstile_commit_seconds                       a batch's LMDB commit
    turnstile_snapshot_seconds                     a snapshot write
    turnstile_snapshot_failures_total              snapshot writes that failed (the journal
                                                   keeps every batch meanwhile)
    turnstile_map_use_ratio                        share of the LMDB map in use (at scrape)
    turnstile_shard_restarts                       restarts of this shard since `serve`
                                                   started, and
    turnstile_shard_crash_loop                     1 while it is in a crash loop: the
                                                   supervisor's record in the control store
                                                   (ControlStore.shard_status), at scrape

A call is counted (and logged) by `CallObserver`, the outermost server interceptor: it
wraps the handler the AuthInterceptor returns, so calls that interceptor denies are
counted with their status too. The hot path adds to plain ints on the event loop (no
lock, no label look-up: a method's tallies are made at its first call) and the registry
renders them at scrape time: about 2 µs a call in all, logging's level check included.
grpc sends an aborted call's status before the handler's exception unwinds: such a call
is counted a moment after its caller has the answer.

The log line of a call (logger `turnstile.calls`) carries the shard, service, method,
principal id, outcome (the gRPC status code), reason (a scan's VerifyResponse reason or an
error's ErrorInfo reason) and latency, never a request, a credential or an error message
(which may quote what was sent): DEBUG for successful scans and frequent reads (QUIET: a
gate storm is thousands of scans a second), INFO for every other call (mutations, audit
and report reads) and for every error and denial.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from bisect import bisect_left

import grpc
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from turnstile.v1 import common_pb2, gate_pb2

call_log = logging.getLogger("turnstile.calls")

LATENCY_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
COMMIT_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1.0, 2.5)
SNAPSHOT_BUCKETS = (.01, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REASONS = {v.number: v.name for v in common_pb2.ScanReason.DESCRIPTOR.values}
UPLOAD_STATUS = [v.name for v in gate_pb2.UploadStatus.DESCRIPTOR.values if v.number]

# methods whose successful calls are logged at DEBUG: scans and frequent reads
QUIET = frozenset({
    "/turnstile.v1.GateService/Verify", "/turnstile.v1.GateService/VerifyBatch",
    "/turnstile.v1.GateService/VerifyStream", "/turnstile.v1.GateService/VerifyPacked",
    "/turnstile.v1.GateService/OfflineBundle",
    "/turnstile.v1.SalesService/Quote", "/turnstile.v1.SalesService/GetHold",
    "/turnstile.v1.InventoryService/Availability", "/turnstile.v1.AdminService/GetShardMap",
    "/turnstile.v1.AdminService/GetCatalog",
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

_OK = grpc.StatusCode.OK

# [principal id, reason] of the call being handled, filled in by the layers that know them
# (auth for a denial, services.rpc for a handled call) and read by CallObserver
_note: contextvars.ContextVar[list] = contextvars.ContextVar("turnstile_call_note")


def note(principal: str | None = None, reason: str | None = None) -> None:
    """Tell the call's log line who called (a principal id) and why it ended as it did
    (an error's ErrorInfo reason). A no-op outside an observed call."""
    rec = _note.get(None)
    if rec is not None:
        if principal is not None:
            rec[0] = principal
        if reason is not None:
            rec[1] = reason


def status_reason(status: grpc.Status) -> str:
    """The ErrorInfo reason in a status's details trailer ("" if none)."""
    from google.rpc import error_details_pb2, status_pb2
    for key, value in status.trailing_metadata or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


class NullMetrics:
    """The counters' interface with nothing behind it (no --metrics-port)."""

    registry = None

    def scan(self, reason: int) -> None:
        pass

    def scans(self, reasons) -> None:
        pass

    def hold(self) -> None:
        pass

    def sale(self) -> None:
        pass

    def refund(self) -> None:
        pass

    def uploads(self, statuses) -> None:
        pass

    def call(self, method: str):
        return None

    def batch(self, calls: int, commit_s: float) -> None:
        pass

    def snapshot(self, seconds: float, ok: bool) -> None:
        pass


NULL = NullMetrics()


class _Histogram:
    """A histogram that one thread observes into without a lock (plain ints and a float);
    rendered, cumulative, at scrape time. A scrape that lands mid-observation may see
    one bucket ahead of the count: Prometheus tolerates that, and the next one agrees."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)        # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        counts, total, out = list(self.counts), 0, []
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), counts):
            total += n
            out.append((bound, total))
        return out


class _Call:
    """One method's tallies: latency histogram and calls by status code."""

    __slots__ = ("service", "method", "latency", "codes")

    def __init__(self, service: str, method: str):
        self.service = service
        self.method = method
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.codes: dict[grpc.StatusCode, int] = {}


class ShardMetrics(NullMetrics):
    """The metrics of one shard process, in a registry of its own. Also the writer's
    observer (GroupCommit.observer): batch() on the event loop after each batch is
    answered, snapshot() on the writer's I/O thread.

    The hot path (calls, scans, sales, batches) runs on the event loop alone: it adds to
    plain ints, lists and dicts (~0.3 µs a call, where a prometheus_client Counter or
    Histogram takes a lock for each value, ~1 µs each), and the registry renders them at
    scrape time from the HTTP thread (reading a copy of each dict)."""

    def __init__(self, shard_id: int, *, writer=None, shard=None, store=None):
        self.shard_id = s = str(shard_id)
        self.registry = r = CollectorRegistry()
        self._calls: dict[str, _Call] = {}
        self._scans = [0] * (max(REASONS) + 1)
        self._holds = self._sales = self._refunds = 0
        self._uploads = dict.fromkeys(UPLOAD_STATUS, 0)
        self._batch = _Histogram(BATCH_BUCKETS)
        self._commit = _Histogram(COMMIT_BUCKETS)
        self._snapshot = _Histogram(SNAPSHOT_BUCKETS)          # the I/O thread's alone
        self._snapshot_failures = 0
        r.register(_Tallies(self))
        if writer is not None:
            Gauge("turnstile_writer_queue_depth", "commands waiting for the shard's writer",
                  ["shard"], registry=r).labels(s).set_function(lambda: writer.queued)
        if shard is not None:
            def map_use() -> float:
                try:
                    return shard.storage.map_use()
                except Exception:           # closed (stopping): no value
                    return float("nan")
            Gauge("turnstile_map_use_ratio", "share of the LMDB map in use", ["shard"],
                  registry=r).labels(s).set_function(map_use)
        if store is not None:
            r.register(_Restarts(s, store))

    # -- results, from the handlers (server/services.py) ------------------------------------
    def scan(self, reason: int) -> None:
        self._scans[reason] += 1

    def scans(self, reasons: bytes) -> None:
        """reasons: one ScanReason value a scan (a batch's, as the engine gives them)."""
        tally = self._scans
        for reason in set(reasons):
            tally[reason] += reasons.count(reason)

    def hold(self) -> None:
        self._holds += 1

    def sale(self) -> None:
        self._sales += 1

    def refund(self) -> None:
        self._refunds += 1

    def uploads(self, statuses) -> None:
        """statuses: UploadStatus names (APPLIED, DUPLICATE, CONFLICT)."""
        tally = self._uploads
        for status in statuses:
            tally[status] = tally.get(status, 0) + 1

    # -- the writer's observer ----------------------------------------------------------------
    def batch(self, calls: int, commit_s: float) -> None:
        self._batch.observe(calls)
        self._commit.observe(commit_s)

    def snapshot(self, seconds: float, ok: bool) -> None:
        self._snapshot.observe(seconds)
        if not ok:
            self._snapshot_failures += 1

    # -- calls ----------------------------------------------------------------------------------
    def call(self, method: str) -> _Call:
        """A method's tallies, made at its first call (a method the server serves)."""
        hit = self._calls.get(method)
        if hit is None:
            service, name = method[1:].rsplit("/", 1)
            hit = self._calls[method] = _Call(service.rsplit(".", 1)[-1], name)
        return hit

    @staticmethod
    def count(bound: _Call, code: grpc.StatusCode, seconds: float) -> None:
        codes = bound.codes
        codes[code] = codes.get(code, 0) + 1
        bound.latency.observe(seconds)

    def serve(self, host: str, port: int):
        """Serve /metrics on host:port from a daemon thread; returns the HTTP server
        (.shutdown() stops it) and the port it is bound to."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_address[1]


class _Tallies:
    """ShardMetrics' tallies as metric families, at scrape time."""

    def __init__(self, m: ShardMetrics):
        self.m = m

    def describe(self):
        return []           # names known only at collect(): never checked for clashes

    def collect(self):
        m, s = self.m, self.m.shard_id
        calls = CounterMetricFamily("turnstile_calls", "gRPC calls answered, by status code",
                                    labels=["shard", "service", "method", "code"])
        latency = HistogramMetricFamily("turnstile_call_seconds", "gRPC call latency (a "
                                        "stream: from its start to its end)",
                                        labels=["shard", "service", "method"])
        for c in list(m._calls.values()):
            for code, n in list(c.codes.items()):
                calls.add_metric([s, c.service, c.method, code.name], n)
            latency.add_metric([s, c.service, c.method], c.latency.buckets(), c.latency.sum)
        yield calls
        yield latency
        scans = CounterMetricFamily("turnstile_scans", "scans answered (Verify, VerifyBatch, "
                                    "VerifyStream; a retried scan_id or batch_id counts again) "
                                    "by VerifyResponse reason", labels=["shard", "reason"])
        for number, name in REASONS.items():
            scans.add_metric([s, name], m._scans[number])
        yield scans
        for name, value, what in (
                ("turnstile_holds", m._holds, "Hold calls answered OK"),
                ("turnstile_sales", m._sales, "Confirm calls answered OK: orders sold"),
                ("turnstile_refunds", m._refunds, "Refund calls answered OK")):
            family = CounterMetricFamily(name, what + " (an idempotent retry counts again)",
                                         labels=["shard"])
            family.add_metric([s], value)
            yield family
        uploads = CounterMetricFamily("turnstile_offline_scans", "offline scans uploaded "
                                      "(UploadScans) by UploadStatus; CONFLICT: the gate "
                                      "admitted what the server refuses", labels=["shard", "status"])
        for status, n in list(m._uploads.items()):
            uploads.add_metric([s, status], n)
        yield uploads
        for name, h, what in (("turnstile_batch_size", m._batch, "commands per committed batch"),
                              ("turnstile_commit_seconds", m._commit, "a batch's LMDB commit"),
                              ("turnstile_snapshot_seconds", m._snapshot, "a snapshot write")):
            family = HistogramMetricFamily(name, what, labels=["shard"])
            family.add_metric([s], h.buckets(), h.sum)
            yield family
        failures = CounterMetricFamily("turnstile_snapshot_failures", "snapshot writes that "
                                       "failed (the journal keeps every batch; the next snapshot "
                                       "falls due later)", labels=["shard"])
        failures.add_metric([s], m._snapshot_failures)
        yield failures


class _Restarts:
    """turnstile_shard_restarts and turnstile_shard_crash_loop of one shard, read from the
    supervisor's status row at scrape time (none while no row exists: a lone serve-shard)."""

    def __init__(self, shard: str, store):
        self.shard = shard
        self.store = store

    def describe(self):
        return []           # names known only at collect(): never checked for clashes

    def collect(self):
        try:
            row = self.store.shard_status().get(int(self.shard))
        except Exception:                   # closed (stopping), unreadable: no value
            row = None
        if row is None:
            return
        restarts = GaugeMetricFamily("turnstile_shard_restarts", "times `serve` restarted "
                                     "this shard's process since it started (the supervisor's "
                                     "record)", labels=["shard"])
        restarts.add_metric([self.shard], row.get("restarts", 0))
        yield restarts
        loop = GaugeMetricFamily("turnstile_shard_crash_loop", "1 while the supervisor sees "
                                 "this shard in a crash loop", labels=["shard"])
        loop.add_metric([self.shard], 1 if row.get("crash_loop") else 0)
        yield loop


class CallObserver(grpc.aio.ServerInterceptor):
    """Counts, times and logs every call: the outermost interceptor, so calls the
    AuthInterceptor denies are counted with their status too. The wrapped handler of an
    inner handler is made once and reused while that handler is (auth caches its own)."""

    def __init__(self, shard_id: int, metrics: NullMetrics = NULL):
        self.shard_id = shard_id
        self.metrics = metrics if isinstance(metrics, ShardMetrics) else None
        self._wrapped: dict[int, tuple] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        hit = self._wrapped.get(id(handler))
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler, details.method)
        if len(self._wrapped) >= 10_000:
            self._wrapped.clear()
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _done(self, names: tuple, bound, quiet: bool, rec: list, code, seconds: float,
              response=None) -> None:
        if bound is not None:                   # ShardMetrics.count, inlined
            codes = bound.codes
            codes[code] = codes.get(code, 0) + 1
            bound.latency.observe(seconds)
        level = logging.DEBUG if quiet and code is _OK else logging.INFO
        if call_log.isEnabledFor(level):
            reason = rec[1]
            if reason is None and type(response) is gate_pb2.VerifyResponse:
                reason = REASONS.get(response.reason, str(response.reason))
            service, name = names
            call_log.log(level, "%s/%s by %s: %s%s in %.2f ms", service, name, rec[0] or "-",
                         code.name, f" ({reason})" if reason else "", seconds * 1000,
                         extra={"service": service, "method": name, "principal": rec[0] or "",
                                "outcome": code.name, "reason": reason or "",
                                "latency_ms": round(seconds * 1000, 3)})

    def _wrap(self, handler, method: str):
        bound = self.metrics.call(method) if self.metrics is not None else None
        quiet = method in QUIET
        service, name = method[1:].rsplit("/", 1)
        names = (service.rsplit(".", 1)[-1], name)
        done = self._done

        def ended(context, exc: BaseException):
            code = context.code()
            if code is None or code is _OK:     # not aborted: cancelled, or grpc's UNKNOWN
                gone = isinstance(exc, (asyncio.CancelledError, GeneratorExit))
                code = grpc.StatusCode.CANCELLED if gone else grpc.StatusCode.UNKNOWN
            return code

        def unary(inner):
            async def call(request, context):
                rec = [None, None]
                token = _note.set(rec)
                t = time.perf_counter()
                try:
                    response = await inner(request, context)
                except BaseException as e:
                    done(names, bound, quiet, rec, ended(context, e), time.perf_counter() - t)
                    raise
                finally:
                    _note.reset(token)
                done(names, bound, quiet, rec, context.code() or _OK, time.perf_counter() - t,
                     response)
                return response
            return call

        def streaming(inner):
            async def call(request, context):
                rec = [None, None]
                token = _note.set(rec)
                t = time.perf_counter()
                try:
                    async for out in inner(request, context):
                        yield out
                except BaseException as e:
                    done(names, bound, quiet, rec, ended(context, e), time.perf_counter() - t)
                    raise
                finally:
                    try:
                        _note.reset(token)
                    except ValueError:      # closed from another context
                        pass
                done(names, bound, quiet, rec, context.code() or _OK, time.perf_counter() - t)
            return call

        for kind, make in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                           ("unary_stream", grpc.unary_stream_rpc_method_handler),
                           ("stream_unary", grpc.stream_unary_rpc_method_handler),
                           ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            inner = getattr(handler, kind)
            if inner is None:
                continue
            # a streaming answer is an async generator or a coroutine that writes
            wrap = streaming if inspect.isasyncgenfunction(inner) else unary
            return make(wrap(inner), handler.request_deserializer, handler.response_serializer)
        return handler
