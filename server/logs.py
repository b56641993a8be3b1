"""Logging of the server's processes (a shard process, the supervisor) to stderr.

    configure("json", "INFO", shard=0)

`text` (the default) gives one readable line a record; `json` one JSON object a line
(JSON lines), with `ts` (UTC, ISO 8601), `level`, `logger`, `msg`, `shard` (a shard
process; absent in the supervisor) and the record's own fields: a call's line
(server/metrics.py, logger `turnstile.calls`) adds `service`, `method`, `principal`,
`outcome` (gRPC status code), `reason` and `latency_ms`. What the server logs never holds
a request body, an ID number, a ticket code, an API key or any other secret.

The "listening on ..." line and the lifecycle lines a supervisor and the tests read stay
plain prints on stdout; logs go to stderr.

A record is formatted where it is made and written by a thread of its own
(logging.handlers.QueueListener), through a bounded queue: a stderr that is slow or not
read at all (a full pipe) never stalls the event loop, and so never a gate. When the
queue is full, records are dropped and counted, and the next one that gets through says
how many were lost.
"""
from __future__ import annotations

import datetime as dt
import json
import atexit
import logging
import logging.handlers
import queue
import sys

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
QUIET_LIBRARIES = ("asyncio", "grpc", "urllib3")

# attributes every LogRecord has: anything else on a record came in through `extra`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _Shard(logging.Filter):
    """Puts the process's shard on every record (unless the record names one)."""

    def __init__(self, shard: int | None):
        super().__init__()
        self.shard = shard

    def filter(self, record: logging.LogRecord) -> bool:
        if self.shard is not None and not hasattr(record, "shard"):
            record.shard = self.shard
        return True


def _ts(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a record: ts, level, logger, msg, the fields given as `extra`,
    and exc (the traceback) if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _ts(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`TS LEVEL [shard N] logger: message`."""

    def format(self, record: logging.LogRecord) -> str:
        shard = getattr(record, "shard", None)
        where = f" shard {shard}" if shard is not None else ""
        line = f"{_ts(record)} {record.levelname}{where} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


QUEUE = 10_000          # records waiting for the writer thread before new ones are dropped


class _Line:
    """A record's finished text, what the queue carries to the writer thread."""
    __slots__ = ("line",)

    def __init__(self, line: str):
        self.line = line


class _LineWriter(logging.StreamHandler):
    """The writer thread's handler: writes the lines as they were formatted."""

    def format(self, record: _Line) -> str:      # type: ignore[override]
        return record.line


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread without waiting: when its queue is full the
    record is dropped and counted (`dropped`), and the next record that gets through is
    preceded by one that says how many were lost."""

    def __init__(self, q: queue.Queue):
        super().__init__(q)
        self.dropped = 0
        self._untold = 0

    def _tell(self, block: bool) -> None:
        if self._untold:
            lost = logging.makeLogRecord({
                "name": "turnstile.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": f"{self._untold} log records dropped: stderr was not read fast enough"})
            self.queue.put(self.prepare(lost), block=block)
            self._untold = 0

    def handle(self, record: logging.LogRecord) -> bool:
        # the queue is thread-safe: no handler lock per record (Handler.handle takes one)
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def prepare(self, record: logging.LogRecord) -> _Line:
        # the line, made here; no copy of the record (QueueHandler.prepare makes one)
        return _Line(self.format(record))

    def enqueue(self, record: _Line) -> None:
        try:
            self._tell(block=False)
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._untold += 1

    def close_listener(self) -> None:
        """At exit: say what was dropped, write what is queued, stop the writer thread."""
        try:
            self._tell(block=True)
        finally:
            self.listener.stop()


def configure(fmt: str = "text", level: str = "INFO", *, shard: int | None = None,
              stream=None) -> logging.Handler:
    """Log this process's records at `level` and above to `stream` (stderr) as `fmt`
    (text or json), each with `shard` if given, written by a thread of its own (see the
    module docstring); it flushes at exit. Replaces the root logger's handlers; returns
    the new (queue) handler."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    out = _LineWriter(stream if stream is not None else sys.stderr)
    q: queue.Queue = queue.Queue(QUEUE)
    handler = DroppingQueueHandler(q)
    handler.addFilter(_Shard(shard))
    # formatted here (prepare), written there: the writer thread only does the I/O
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.listener = logging.handlers.QueueListener(q, out)
    handler.listener.start()
    atexit.register(handler.close_listener)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, DroppingQueueHandler):
            atexit.unregister(old.close_listener)
            old.close_listener()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:       # their DEBUG is their own business, not a shard's
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    return handler
