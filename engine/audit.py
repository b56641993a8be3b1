"""The audit log: one hash-chained record per audited command (DESIGN.md 4.2, 5), with
signed checkpoints, archived to files when old.

Records. A record is {seq, at, principal, method, digest, result, prev}; its hash is
SHA-256 over the previous record's hash and the record's canonical JSON, so changing,
removing or reordering any record breaks every hash after it. Records are rows of the
shard's LMDB environment (`audit/<seq>`), written in the same transaction as the batch
of the commands they describe, with the chain's head (`audit-head`: seq and hash).

Checkpoints. A hash chain alone resists editing, not rewriting: whoever can write the
data dir can recompute every hash after a change, or cut records off the end. So every
`every` records (Shard.audit_every, 1000 by default), and when the shard closes, the
writer signs a checkpoint (`audit-cp/<seq>`): {shard, seq, hash, at, next_by, key, sig},
Ed25519 over the shard id, the seq, the chain hash at that seq, the time and `next_by`,
the seq by which the next checkpoint is due. The signing key is the shard's audit key,
made with the shard (or when a shard from before checkpoints is first opened): its seed
is stored only sealed under the shard's data key (AES-256-GCM, engine/keyring.py, bound
to the label "turnstile/audit-key/v1" and the row's public fields), its public key is
readable in the same meta row (`audit_key`), so an auditor verifies without the master
key; with the master key, `turnstile check` also checks that the sealed seed is the one
the public key belongs to (a replaced key row is found out).

What verification finds (verify_chain):
  - an edited, removed or reordered record: its hash or link breaks;
  - a rewritten chain (hashes recomputed after a change): the first checkpoint at or
    after the change names another hash, and its signature cannot be remade without
    the key;
  - checkpoints removed: a record beyond the `next_by` its last checkpoint signed;
  - truncation: a checkpoint that names a seq beyond the end of the chain, or a head row
    that does;
  - archive segments removed, reordered or edited: a gap in the seqs, a broken link, a
    segment that does not end with its checkpoint, a checkpoint that does not verify.
Records after the last checkpoint are covered by their hashes only (at most `every`
records, plus whatever a crash left unsigned before the next open): an edit among them
with the hashes recomputed, or a cut of them together with the head row, is not found
from the data dir alone. Neither is a rollback of the whole dir to an earlier state
(a cut back to an old checkpoint with every later checkpoint and the head removed): an
auditor finds it by comparing with a checkpoint noted earlier (`turnstile check` and
`turnstile audit verify` print the last one).

Archive. Old segments -- the records up to a checkpoint, from the end of the previous
segment -- are written to files in the shard dir, `audit/<first>-<last>.jsonl` (16 hex
digits each): one line per record as stored, a `{"checkpoint": ...}` line after each
record a checkpoint covers, the last line the checkpoint that closes the segment. A
file is written to a temporary name, fsync'd, read back and verified against its
checkpoint, then renamed into place (and the dir fsync'd); only then are its rows
pruned from LMDB, a slice at a time. The archived files and the hot rows are verified
as one chain; a record both archived and still hot (a crash between the two) must be
the same in both.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .storage import _fsync

PREFIX = b"audit/"
CP_PREFIX = b"audit-cp/"
HEAD = b"audit-head"
KEY_META = "audit_key"
ARCHIVE_DIR = "audit"
GENESIS = "0" * 64
EVERY = 1000                    # records between checkpoints, by default
_KEY_LABEL = b"turnstile/audit-key/v1"
_SIG_DOMAIN = b"turnstile audit checkpoint v1\0"
_SEGMENT = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.jsonl\Z")


def key(seq: int) -> bytes:
    return PREFIX + b"%016x" % seq


def cp_key(seq: int) -> bytes:
    return CP_PREFIX + b"%016x" % seq


def _canonical(record: dict) -> str:
    """The JSON a record's hash covers: every field but the hash, keys sorted."""
    return json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True,
                      separators=(",", ":"))


def chain_hash(prev: str, record: dict) -> str:
    return hashlib.sha256((prev + _canonical(record)).encode()).hexdigest()


def make(seq: int, prev: str, at: int, principal: str, method: str, digest: str,
         result: str) -> tuple[str, bytes]:
    """(hash, stored row) of a new record: the canonical JSON the hash covers, with the
    hash added last (one encoding per record, on the writer's hot path)."""
    body = _canonical({"seq": seq, "at": at, "principal": principal, "method": method,
                       "digest": digest, "result": result, "prev": prev})
    h = hashlib.sha256((prev + body).encode()).hexdigest()
    return h, f'{body[:-1]},"hash":"{h}"}}'.encode()


def head_row(seq: int, h: str) -> bytes:
    return b'{"seq":%d,"hash":"%s"}' % (seq, h.encode())


def verify(records: Iterator[dict]) -> tuple[bool, int, int]:
    """The hash chain alone of `records` from the first: (ok, records checked, first
    bad seq or 0). verify_chain checks the whole log (checkpoints, archive, head)."""
    prev, expect, n = GENESIS, 1, 0
    for rec in records:
        n += 1
        if rec.get("seq") != expect or rec.get("prev") != prev or chain_hash(prev, rec) != rec.get("hash"):
            return False, n, expect
        prev, expect = rec["hash"], expect + 1
    return True, n, 0


# -- the audit key ----------------------------------------------------------------------
def key_id(public: bytes) -> str:
    """A short public name of an audit key."""
    return hashlib.sha256(b"turnstile audit key\0" + public).hexdigest()[:16]


def _key_fields(shard: int, public: bytes, first_by: int) -> dict:
    return {"v": 1, "shard": shard, "alg": "Ed25519", "public": public.hex(),
            "key": key_id(public), "first_by": first_by}


def _key_label(fields: dict) -> bytes:
    return _KEY_LABEL + b"\0" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def new_key(ring, shard: int, first_by: int) -> tuple[Ed25519PrivateKey, bytes]:
    """A new audit key and its meta row: the public fields readable, the seed sealed
    under the shard's data key (`ring`, engine/keyring.Keyring) bound to them.
    `first_by`: the seq by which the first checkpoint is due."""
    seed = os.urandom(32)
    signer = Ed25519PrivateKey.from_private_bytes(seed)
    fields = _key_fields(shard, signer.public_key().public_bytes_raw(), first_by)
    row = dict(fields, sealed=ring.seal(seed, _key_label(fields)))
    return signer, json.dumps(row, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class AuditKey:
    """The public part of a shard's audit key row."""
    shard: int
    public: bytes
    key: str
    first_by: int
    sealed: str
    fields: dict

    @classmethod
    def parse(cls, raw: bytes) -> "AuditKey":
        """ValueError if `raw` is not an audit key row."""
        try:
            d = json.loads(raw)
            fields = _key_fields(int(d["shard"]), bytes.fromhex(d["public"]), int(d["first_by"]))
            if any(d.get(k) != v for k, v in fields.items()) or len(fields["public"]) != 64:
                raise ValueError("the key row's fields do not agree")
            return cls(fields["shard"], bytes.fromhex(d["public"]), fields["key"],
                       fields["first_by"], str(d["sealed"]), fields)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not an audit key row ({e})") from None

    def signer(self, ring) -> Ed25519PrivateKey:
        """The private key, opened with the shard's data key; CorruptData if the sealed
        seed does not open (bound to these public fields) or is not this public key's."""
        from .errors import CorruptData
        seed = ring.open(self.sealed, _key_label(self.fields))
        signer = Ed25519PrivateKey.from_private_bytes(seed)
        if signer.public_key().public_bytes_raw() != self.public:
            raise CorruptData("the audit key's public key is not its sealed seed's")
        return signer


# -- checkpoints --------------------------------------------------------------------------
def _cp_message(cp: dict) -> bytes:
    body = {k: cp[k] for k in ("shard", "seq", "hash", "at", "next_by", "key")}
    return _SIG_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def make_checkpoint(signer: Ed25519PrivateKey, kid: str, shard: int, seq: int, h: str,
                    at: int, next_by: int) -> bytes:
    """The stored row of a checkpoint signed by `signer` (the key named `kid`)."""
    cp = {"v": 1, "shard": shard, "seq": seq, "hash": h, "at": at, "next_by": next_by, "key": kid}
    cp["sig"] = base64.b64encode(signer.sign(_cp_message(cp))).decode()
    return json.dumps(cp, sort_keys=True, separators=(",", ":")).encode()


def check_checkpoint(cp: dict, public: Ed25519PublicKey, kid: str, shard: int) -> str:
    """"" if the checkpoint is signed by the key and names this shard, else the problem."""
    try:
        if cp.get("shard") != shard:
            return f"names shard {cp.get('shard')}, not {shard}"
        if cp.get("key") != kid:
            return f"is signed by key {cp.get('key')}, not the shard's audit key {kid}"
        public.verify(base64.b64decode(cp["sig"], validate=True), _cp_message(cp))
        if type(cp["seq"]) is not int or type(cp["next_by"]) is not int or cp["next_by"] <= cp["seq"]:
            return "is malformed"
        return ""
    except (InvalidSignature, KeyError, TypeError, ValueError, binascii.Error):
        return "has a signature that does not verify"


# -- the archive ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Segment:
    path: str
    first: int
    last: int


def segments(archive: str) -> list[Segment]:
    """The archive files in `archive` (a shard's audit dir), by first seq."""
    try:
        names = os.listdir(archive)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        m = _SEGMENT.match(n)
        if m:
            out.append(Segment(os.path.join(archive, n), int(m[1], 16), int(m[2], 16)))
    out.sort(key=lambda s: (s.first, s.last))
    return out


def _segment_lines(seg: Segment) -> Iterator[tuple[str, dict]]:
    """("record" | "checkpoint", the parsed line) of an archive file, in order."""
    with open(seg.path, "rb") as f:
        for line in f:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("a line is not a JSON object")
            if "checkpoint" in d:
                yield "checkpoint", d["checkpoint"]
            else:
                yield "record", d


# -- verification ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Report:
    """What verify_chain found. `ok` with `problem` empty; else `problem` says what and
    `first_bad_seq` where (the first record that does not verify, the checkpoint that
    found a rewrite, or the first seq missing after a cut)."""
    ok: bool
    checked: int                # records checked
    first_bad_seq: int
    problem: str
    archived: int               # of them, read from archive files
    segments: int
    head_seq: int               # the end of the chain
    last_checkpoint: int        # seq of the last checkpoint verified (0: none)
    last_checkpoint_hash: str
    key: str                    # the audit key's id ("" if the shard has none)
    signed: bool                # the shard has an audit key (made before them if not)

    @property
    def unsigned_tail(self) -> int:
        """Records after the last checkpoint: covered by their hashes only."""
        return self.head_seq - self.last_checkpoint

    def summary(self) -> str:
        if not self.ok:
            return f"audit chain BROKEN at seq {self.first_bad_seq}: {self.problem}"
        what = (f"audit chain ok: {self.checked} records "
                f"({self.archived} archived in {self.segments} segments)")
        if not self.signed:
            return what + ", no checkpoints (a shard from before them: hashes only)"
        if self.last_checkpoint:
            what += (f", last checkpoint at seq {self.last_checkpoint} "
                     f"(hash {self.last_checkpoint_hash[:16]}..., key {self.key})")
        else:
            what += f", no checkpoint yet (key {self.key})"
        if self.unsigned_tail:
            what += f"; the last {self.unsigned_tail} covered by hash only"
        return what


class _Broken(Exception):
    def __init__(self, seq: int, problem: str):
        self.seq, self.problem = seq, problem


class _Walk:
    def __init__(self, shard: int, key: AuditKey | None):
        self.shard, self.key = shard, key
        self.public = Ed25519PublicKey.from_public_bytes(key.public) if key else None
        self.prev, self.seq, self.n, self.archived = GENESIS, 0, 0, 0
        self.deadline = key.first_by if key else None
        self.last_cp, self.last_cp_hash = 0, ""

    def record(self, rec: dict) -> None:
        expect = self.seq + 1
        self.n += 1
        if self.deadline is not None and expect > self.deadline:
            raise _Broken(self.deadline, f"no checkpoint by seq {self.deadline}, which the "
                                         f"previous one promised (checkpoints removed?)")
        if rec.get("seq") != expect:
            s = rec.get("seq")
            if type(s) is int and s > expect:
                raise _Broken(expect, f"records {expect}..{s - 1} are missing")
            raise _Broken(expect, f"record {expect} is out of place (seq {s} found)")
        if rec.get("prev") != self.prev or chain_hash(self.prev, rec) != rec.get("hash"):
            raise _Broken(expect, f"record {expect} does not verify (edited, or its chain "
                                  f"rewritten)")
        self.prev, self.seq = rec["hash"], expect

    def checkpoint(self, cp: dict, where: str) -> None:
        seq = cp.get("seq")
        if self.public is None:
            raise _Broken(seq or 0, f"checkpoint at seq {seq} {where}, but the shard has no "
                                    f"audit key (its key row removed?)")
        bad = check_checkpoint(cp, self.public, self.key.key, self.shard)
        if bad:
            raise _Broken(seq if type(seq) is int else 0, f"checkpoint at seq {seq} {where} {bad}")
        if seq != self.seq:
            raise _Broken(seq, f"checkpoint at seq {seq} {where} is out of place (chain at {self.seq})")
        if cp["hash"] != self.prev:
            raise _Broken(seq, f"checkpoint at seq {seq} does not match the chain: the records "
                               f"up to it were changed and their hashes recomputed")
        self.deadline = cp["next_by"]
        self.last_cp, self.last_cp_hash = seq, cp["hash"]


def verify_chain(shard: int, txn, rows_db, meta_db, archive: str, ring=None) -> Report:
    """Verify a shard's whole audit log: the archive files in `archive`, then the hot rows,
    as one chain, with every checkpoint and the head row; read inside the LMDB read
    transaction `txn` (rows in `rows_db`, the key row in `meta_db`). Archive files are
    listed after the transaction began: a segment archived and pruned since is still
    read (files are only ever added). With `ring` (the shard's keyring.Keyring) the key
    row is checked against its sealed seed too."""
    raw_key = txn.get(KEY_META.encode(), db=meta_db)
    raw_head = txn.get(HEAD, db=rows_db)
    key: AuditKey | None = None
    segs = segments(archive)
    walk = None
    try:
        if raw_key is not None:
            try:
                key = AuditKey.parse(raw_key)
            except ValueError as e:
                raise _Broken(0, f"the audit key row is unreadable: {e}") from None
            if key.shard != shard:
                raise _Broken(0, f"the audit key row is shard {key.shard}'s, not {shard}'s")
            if ring is not None:
                from .errors import CorruptData
                try:
                    key.signer(ring)
                except CorruptData:
                    raise _Broken(0, "the audit key row does not open under the shard's data "
                                     "key (replaced?)") from None
        walk = _Walk(shard, key)
        # checkpoints kept hot, by seq
        cps: dict[int, dict] = {}
        cur = txn.cursor(db=rows_db)
        if cur.set_range(CP_PREFIX):
            for k, v in cur:
                if not k.startswith(CP_PREFIX):
                    break
                try:
                    cp = json.loads(v)
                    cps[int(k[len(CP_PREFIX):], 16)] = cp
                except ValueError:
                    raise _Broken(0, f"checkpoint row {k.decode(errors='replace')} is unreadable") from None
        hot = _hot(txn, rows_db)
        nxt = next(hot, None)

        def passed(seq: int) -> None:
            cp = cps.pop(seq, None)
            if cp is not None:
                walk.checkpoint(cp, "(hot)")

        # archive files, with any hot row they overlap
        for seg in segs:
            name = os.path.basename(seg.path)
            if seg.first != walk.seq + 1:
                raise _Broken(walk.seq + 1, f"archive {name} starts at seq {seg.first}, the "
                                            f"chain is at {walk.seq} (a segment removed or "
                                            f"out of order?)")
            last_kind = None
            try:
                for kind, d in _segment_lines(seg):
                    last_kind = kind
                    if kind == "record":
                        walk.record(d)
                        walk.archived += 1
                        while nxt is not None and nxt[0] <= walk.seq:
                            if nxt[0] != walk.seq or nxt[1] != d:
                                raise _Broken(nxt[0], f"hot record {nxt[0]} differs from its "
                                                      f"archived copy in {name}")
                            nxt = next(hot, None)
                    else:
                        walk.checkpoint(d, f"(archive {name})")
                        hot_cp = cps.pop(walk.seq, None)
                        if hot_cp is not None and hot_cp != d:
                            raise _Broken(walk.seq, f"hot checkpoint {walk.seq} differs from "
                                                    f"its archived copy in {name}")
            except (ValueError, OSError) as e:
                raise _Broken(walk.seq + 1, f"archive {name} is unreadable ({e})") from None
            if last_kind != "checkpoint" or walk.seq != seg.last:
                raise _Broken(walk.seq + 1 if walk.seq < seg.last else seg.last,
                              f"archive {name} does not end with the checkpoint of its last "
                              f"record (cut short?)")
        # the hot rows after them
        while nxt is not None:
            walk.record(nxt[1])
            passed(walk.seq)
            nxt = next(hot, None)
        if cps:
            s = min(cps)
            raise _Broken(walk.seq + 1, f"a checkpoint names seq {s} but the chain ends at "
                                        f"{walk.seq}: records were cut off its end")
        if raw_head is not None:
            try:
                head = json.loads(raw_head)
                hs, hh = int(head["seq"]), head["hash"]
            except (ValueError, KeyError, TypeError):
                raise _Broken(walk.seq + 1, "the audit head row is unreadable") from None
            if hs > walk.seq:
                raise _Broken(walk.seq + 1, f"the head row says the chain ends at seq {hs}, "
                                            f"it ends at {walk.seq}: records were cut off its end")
            if (hs, hh) != (walk.seq, walk.prev):
                raise _Broken(hs, f"the head row (seq {hs}) does not match the chain's end "
                                  f"(seq {walk.seq})")
        elif key is not None and walk.seq:
            raise _Broken(walk.seq, "the audit head row is missing")
        if key is None and (segs or walk.last_cp):
            raise _Broken(0, "the chain has checkpoints but the shard no audit key")
        return Report(True, walk.n, 0, "", walk.archived, len(segs), walk.seq, walk.last_cp,
                      walk.last_cp_hash, key.key if key else "", key is not None)
    except _Broken as b:
        w = walk or _Walk(shard, None)
        return Report(False, w.n, b.seq, b.problem, w.archived, len(segs), w.seq, w.last_cp,
                      w.last_cp_hash, key.key if key else "", key is not None)


def _hot(txn, rows_db) -> Iterator[tuple[int, dict]]:
    cur = txn.cursor(db=rows_db)
    if not cur.set_range(PREFIX):
        return
    for k, v in cur:
        if not k.startswith(PREFIX):
            return
        try:
            yield int(k[len(PREFIX):], 16), json.loads(v)
        except ValueError:
            raise _Broken(0, f"audit row {k.decode(errors='replace')} is unreadable") from None


# -- archiving -----------------------------------------------------------------------------
def archive(shard: int, env, rows_db, meta_db, archive_dir: str, *, keep: int,
            segment_records: int) -> list[Segment]:
    """Write the old segments of a shard's audit log to files in `archive_dir`: every
    record up to a checkpoint that is at least `keep` records behind the head, cut into
    files of at least `segment_records` records, each ending at a checkpoint. Each file
    is fsync'd, read back and verified, then renamed into place. Reads one LMDB read
    transaction of `env`, so it may run beside the writer (in a thread); it prunes
    nothing (see prune_keys). CorruptData if the records to archive do not verify: a
    broken segment is left where it is, as evidence. Returns the segments written."""
    from .errors import CorruptData
    os.makedirs(archive_dir, mode=0o700, exist_ok=True)
    for n in os.listdir(archive_dir):               # what a crash left half-written
        if n.endswith(".tmp"):
            os.remove(os.path.join(archive_dir, n))
    done = segments(archive_dir)
    written: list[Segment] = []
    with env.begin() as txn:
        raw_key = txn.get(KEY_META.encode(), db=meta_db)
        if raw_key is None:
            return []                                # no checkpoints: nothing to close a segment
        akey = AuditKey.parse(raw_key)
        public = Ed25519PublicKey.from_public_bytes(akey.public)
        raw_head = txn.get(HEAD, db=rows_db)
        head = json.loads(raw_head)["seq"] if raw_head else 0
        end = done[-1].last if done else 0
        prev = GENESIS
        if done:
            *_, (kind, last) = _segment_lines(done[-1])
            if kind != "checkpoint":
                raise CorruptData(f"archive {done[-1].path} does not end with a checkpoint")
            prev = last["hash"]
        # the checkpoints that may close a segment
        cps = []
        cur = txn.cursor(db=rows_db)
        if cur.set_range(cp_key(end + 1)):
            for k, v in cur:
                if not k.startswith(CP_PREFIX):
                    break
                cp = json.loads(v)
                if cp["seq"] > head - keep:
                    break
                cps.append(cp)
        # cut: a segment closes at the first checkpoint with segment_records behind it;
        # a last, shorter run of checkpoints waits for more
        groups: list[list[dict]] = []
        run: list[dict] = []
        start = end
        for cp in cps:
            run.append(cp)
            if cp["seq"] - start >= segment_records:
                groups.append(run)
                run, start = [], cp["seq"]
        for group in groups:
            last = group[-1]["seq"]
            inside = {cp["seq"]: cp for cp in group}
            lines: list[bytes] = []
            walk_prev, expect = prev, end + 1
            cur = txn.cursor(db=rows_db)
            if cur.set_range(key(end + 1)):
                for k, v in cur:
                    if not k.startswith(PREFIX) or expect > last:
                        break
                    rec = json.loads(v)
                    if rec.get("seq") != expect or rec.get("prev") != walk_prev \
                            or chain_hash(walk_prev, rec) != rec.get("hash"):
                        raise CorruptData(f"audit record {expect} does not verify: records "
                                          f"{end + 1}..{last} not archived")
                    lines.append(bytes(v))
                    walk_prev, expect = rec["hash"], expect + 1
                    cp = inside.get(rec["seq"])
                    if cp is not None:
                        bad = check_checkpoint(cp, public, akey.key, shard)
                        if bad or cp["hash"] != walk_prev:
                            raise CorruptData(f"checkpoint {cp['seq']} "
                                              f"{bad or 'does not match the chain'}: records "
                                              f"{end + 1}..{last} not archived")
                        lines.append(json.dumps({"checkpoint": cp}, sort_keys=True,
                                                separators=(",", ":")).encode())
            if expect != last + 1:
                raise CorruptData(f"audit records {expect}..{last} are missing: not archived")
            seg = Segment(os.path.join(archive_dir, "%016x-%016x.jsonl" % (end + 1, last)),
                          end + 1, last)
            _write_segment(seg, lines, shard, akey, prev, end)
            written.append(seg)
            end, prev = last, walk_prev
    return written


def _write_segment(seg: Segment, lines: list[bytes], shard: int, akey: AuditKey,
                   prev: str, prev_end: int) -> None:
    from .errors import CorruptData
    tmp = seg.path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        # read back: the chain from `prev`, ending at the checkpoint of its last record
        walk = _Walk(shard, akey)
        walk.prev, walk.seq, walk.deadline = prev, prev_end, None
        last = None
        try:
            for kind, d in _segment_lines(Segment(tmp, seg.first, seg.last)):
                last = kind
                if kind == "record":
                    walk.record(d)
                else:
                    walk.checkpoint(d, "")
        except _Broken as b:
            raise CorruptData(f"{tmp} does not read back ({b.problem}); not archived") from None
        if last != "checkpoint" or walk.seq != seg.last:
            raise CorruptData(f"{tmp} does not read back whole; not archived")
        os.replace(tmp, seg.path)
        _fsync(os.path.dirname(seg.path))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def archived_end(archive_dir: str) -> int:
    """The last seq archived in `archive_dir` (0: none)."""
    segs = segments(archive_dir)
    return segs[-1].last if segs else 0


def prune_keys(txn, rows_db, upto: int, limit: int, *, records: bool = True) -> list[bytes]:
    """Up to `limit` keys of hot rows made redundant by archive files that end at `upto`:
    records at or before it (unless not `records`) and checkpoints before it (the one at
    `upto` stays, so the shard keeps its last checkpoint), oldest first."""
    out: list[bytes] = []
    spans = ((PREFIX, key(upto + 1)),) if records else ()
    for prefix, stop in spans + ((CP_PREFIX, cp_key(upto)),):
        cur = txn.cursor(db=rows_db)
        if cur.set_range(prefix):
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(prefix) or k >= stop or len(out) >= limit:
                    break
                out.append(bytes(k))
    return out


def iter_archived(archive_dir: str, after_seq: int) -> Iterable[dict]:
    """Archived records after `after_seq`, oldest first (for QueryAudit)."""
    for seg in segments(archive_dir):
        if seg.last <= after_seq:
            continue
        for kind, d in _segment_lines(seg):
            if kind == "record" and d.get("seq", 0) > after_seq:
                yield d


def install_key(env, meta_db, rows_db, key_row: bytes, seq: int, h: str) -> None:
    """Store a new audit key row, with the head row of the chain it starts signing
    (a shard from before checkpoints has records but no head row), in one transaction."""
    from .errors import StorageError
    try:
        with env.begin(write=True) as txn:
            txn.put(KEY_META.encode(), key_row, db=meta_db)
            if seq:
                txn.put(HEAD, head_row(seq, h), db=rows_db)
    except Exception as e:               # lmdb.Error
        raise StorageError(str(e)) from e
