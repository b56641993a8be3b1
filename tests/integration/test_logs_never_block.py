"""A shard's log must never stall it (issue 12, server/logs.py): with its stderr a pipe
nobody reads -- a wedged log shipper -- calls that log a line each are still answered;
records that could not be written are dropped, counted, and said so once stderr is read
again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from turnstile.server import testing
from turnstile.v1 import sales_pb2, sales_pb2_grpc
from tests.integration.conftest import MASTER_KEY, ROOT, venue_day


def test_calls_are_answered_while_nobody_reads_the_log(tmp_path):
    data = str(tmp_path / "data")
    testing.seed_demo(data, venue_day(), master_key=MASTER_KEY)
    key = testing.master_key_file(data, MASTER_KEY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
    proc = subprocess.Popen([sys.executable, "-m", "turnstile.server.cli", "serve", "--data", data,
                             "--port", "0", "--shards", "1", "--master-key-file", key,
                             "--log-level", "INFO"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    got: list[str] = []
    reader = None
    try:
        address = None
        for line in proc.stdout:
            if line.startswith("listening on "):
                address = line.split()[2]
                break
        assert address
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        keys = testing.read_demo_keys(data)
        meta = (("authorization", f"Bearer {keys['demo-ota']}"),)
        # each refused Hold logs an INFO line of ~130 bytes: a pipe (64 KiB) holds ~500,
        # the log's queue (logs.QUEUE) 10,000 more; stderr is not read until all are answered
        with grpc.insecure_channel(address) as ch:
            stub = sales_pb2_grpc.SalesServiceStub(ch)

            def hold(i):
                try:
                    stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", items=[sales_pb2.Item(
                        product_id=f"no-such-{i}", slot_ids=["x"], qty=1)]),
                        metadata=meta, timeout=10)
                except grpc.RpcError as e:
                    return e.code()
                return grpc.StatusCode.OK

            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(hold, range(11_000)))
            assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}, set(codes)   # each answered, none timed out
            # stderr is read again: the next records that get through say what was lost
            # (while the server runs, not only at its exit, which a slow stop could cut short)
            reader = threading.Thread(target=lambda: [got.append(line) for line in proc.stderr], daemon=True)
            reader.start()
            deadline = time.monotonic() + 60
            while not any("log records dropped" in line for line in got) and time.monotonic() < deadline:
                hold(-1)
                time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        if reader is None:
            # stderr alone: a thread of the test reads stdout to its end already, and
            # communicate() reading stdout too could block in a read the thread won the race
            # for -- while the server, stopping, waits for its stderr to be read (a deadlock
            # communicate's timeout can't break)
            reader = threading.Thread(target=lambda: got.append(proc.stderr.read()), daemon=True)
            reader.start()
        reader.join(60)
        proc.wait(timeout=60)
    dropped = [line for line in got if "log records dropped" in line]
    assert dropped and int(dropped[0].split(" log records dropped")[0].split()[-1]) > 0, got[:3]
