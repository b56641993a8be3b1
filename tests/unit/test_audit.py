"""The audit chain: every audited command leaves a record in its batch's transaction;
any change to a record is detected."""
from __future__ import annotations

import json

from turnstile.engine import cmd, demo, HoldItem, Shard, audit
from tests.conftest import TODAY

SLOT = demo.slot_id("main", TODAY, 8)


def audited(c, who="ota-1", method="/turnstile.v1.SalesService/Hold"):
    c.audit = (who, method, "ab" * 32)
    return c


def test_audit_records_chain_and_survive_reopen(shard, shard_path, clock):
    shard.run_many([audited(cmd.hold("ota", "westlake", [HoldItem("adult", (SLOT,), 1)])),
                    audited(cmd.hold("ota", "westlake", [HoldItem("adult", (SLOT,), 0)]))])
    recs = shard.audit_records()
    assert [(r.seq, r.principal, r.result) for r in recs] == \
        [(1, "ota-1", "OK"), (2, "ota-1", "INVALID_ARGUMENT")]
    assert shard.verify_audit() == (True, 2, 0)
    shard.close()
    s2 = Shard.open(shard_path, clock=clock)
    try:
        s2.run(audited(cmd.expire(), "admin", "/x/Expire"))
        assert [r.seq for r in s2.audit_records()] == [1, 2, 3]
        assert s2.verify_audit() == (True, 3, 0)
        assert s2.audit_records(after_seq=1, principal="admin")[0].method == "/x/Expire"
    finally:
        s2.close()


def test_tampered_record_is_detected(shard):
    for _ in range(3):
        shard.run(audited(cmd.hold("ota", "westlake", [HoldItem("adult", (SLOT,), 1)])))
    with shard.storage.env.begin(write=True, db=shard.storage.rows) as txn:
        rec = json.loads(txn.get(audit.key(2)))
        rec["principal"] = "someone-else"
        txn.put(audit.key(2), json.dumps(rec).encode())
    assert shard.verify_audit() == (False, 2, 2)


def test_removed_record_is_detected(shard):
    for _ in range(3):
        shard.run(audited(cmd.hold("ota", "westlake", [HoldItem("adult", (SLOT,), 1)])))
    with shard.storage.env.begin(write=True, db=shard.storage.rows) as txn:
        txn.delete(audit.key(2))
    ok, _, bad = shard.verify_audit()
    assert not ok and bad == 2
