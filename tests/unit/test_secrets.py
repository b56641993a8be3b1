"""Secrets at rest (DESIGN.md 4.2, issue 9.3): a shard's ticket MAC keys, Ed25519 seeds,
holder secret and ID-number data key are stored only sealed under a data key that is
itself stored only wrapped by a master key kept outside the data dir. Real shards on
real LMDB dirs; the secrets are found through the engine, then looked for in the bytes of
every file."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest

from turnstile.engine import (Command, CommandKind, InvalidArgument, MasterKeyError, Reason, Record, Shard,
                    cmd, demo, keyring)
from turnstile.engine.journal import _HDR, json_record
from tests.conftest import TODAY, sell


def secret_forms(secret: bytes) -> list[bytes]:
    """The raw bytes of a secret and the text forms it could be written in."""
    b64 = base64.b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64,
            b64.rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"=")]


def shard_secrets(shard: Shard, master: bytes) -> dict[str, bytes]:
    """Every secret of an open shard, found through the engine."""
    st = shard.state
    out = {"holder secret": st.holder_secret, "data key": st.data_key,
           "shard data key (DEK)": keyring.unwrap_dek(master, shard.storage.get_meta_bytes("dek"),
                                                      shard.storage.path)}
    for kid, k in st.codec.keys.items():
        out[f"MAC key {kid}"] = k.mac_key
        out[f"Ed25519 seed {kid}"] = k.seed
    assert all(len(v) >= 16 for v in out.values())
    return out


def files_under(*roots: str) -> list[str]:
    return [os.path.join(r, f) for root in roots for r, _, fs in os.walk(root) for f in fs]


def found_secrets(paths: list[str], secrets: dict[str, bytes]) -> list[str]:
    """(file, secret) pairs where any form of the secret is in the file's bytes."""
    hits = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        for name, secret in secrets.items():
            if any(form in data for form in secret_forms(secret)):
                hits.append(f"{path}: {name}")
    return hits


@pytest.fixture
def master() -> bytes:
    return keyring.load_master_key()            # the session's (tests/conftest.py)


def _seeded(path: str, clock, **kw) -> tuple[Shard, list[str]]:
    s = Shard.open(path, clock=clock, **kw)
    s.run_many(demo.commands(TODAY))
    r = sell(s, qty=2)
    return s, [t.code for t in r.tickets]


def test_no_file_of_a_shard_holds_a_secret(tmp_path, clock, master):
    path = str(tmp_path / "shard-0")
    s, _ = _seeded(path, clock)
    s.run(cmd.rotate_key())
    sell(s)
    secrets = shard_secrets(s, master)
    assert len(s.state.codec.keys) == 2
    assert found_secrets(files_under(path), secrets) == []       # journal only
    s.close()                                                     # snapshot: the catalog
    assert found_secrets(files_under(path), secrets) == []
    again = Shard.open(path, clock=clock)
    try:
        assert shard_secrets(again, master) == secrets             # they do open again
    finally:
        again.close(snapshot=False)


def test_open_without_a_master_key_creates_nothing(tmp_path, clock, monkeypatch):
    monkeypatch.delenv("TURNSTILE_MASTER_KEY")
    path = tmp_path / "data" / "shard-0"
    with pytest.raises(MasterKeyError, match="no master key") as e:
        Shard.open(str(path), clock=clock)
    assert "--master-key-file" in str(e.value) and "TURNSTILE_MASTER_KEY" in str(e.value)
    assert not (tmp_path / "data").exists()


def test_a_wrong_master_key_opens_nothing_and_changes_nothing(tmp_path, clock, master):
    path = str(tmp_path / "shard-0")
    s, codes = _seeded(path, clock)
    s.close()
    before = {f: open(f, "rb").read() for f in files_under(path) if not f.endswith("lock.mdb")}
    other = os.urandom(32)
    with pytest.raises(MasterKeyError, match="wrong master key") as e:
        Shard.open(path, clock=clock, master_key=other)
    assert keyring.master_key_id(master) in str(e.value)            # names the right key's id
    with pytest.raises(MasterKeyError):
        Shard.open(path, clock=clock, master_key=other.hex())
    after = {f: open(f, "rb").read() for f in files_under(path) if not f.endswith("lock.mdb")}
    assert after == before
    s = Shard.open(path, clock=clock, master_key=master)            # the right key, given
    try:
        assert s.run(cmd.verify(codes[0], "north-1")).reason == Reason.OK
    finally:
        s.close()


def test_master_key_sources_and_their_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TURNSTILE_MASTER_KEY")
    key_file = str(tmp_path / "master.key")
    key = keyring.create_key_file(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        keyring.create_key_file(key_file)                          # never overwritten
    assert keyring.load_master_key(key_file=key_file) == key
    monkeypatch.setenv("TURNSTILE_MASTER_KEY_FILE", key_file)
    assert keyring.load_master_key() == key
    other = os.urandom(32)
    monkeypatch.delenv("TURNSTILE_MASTER_KEY_FILE")
    monkeypatch.setenv("TURNSTILE_MASTER_KEY", other.hex())
    assert keyring.load_master_key() == other
    assert keyring.load_master_key(key_file=key_file) == key        # the option wins
    assert keyring.load_master_key(other) == other
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(MasterKeyError, match="64 hex digits"):
        keyring.load_master_key(key_file=str(bad))
    with pytest.raises(MasterKeyError, match="cannot read the master key file"):
        keyring.load_master_key(key_file=str(tmp_path / "missing.key"))
    monkeypatch.setenv("TURNSTILE_MASTER_KEY", "abcd")
    with pytest.raises(MasterKeyError, match="TURNSTILE_MASTER_KEY is not a master key"):
        keyring.load_master_key()


def test_rotating_the_master_key(tmp_path, clock, master):
    path = str(tmp_path / "shard-0")
    s, codes = _seeded(path, clock)
    secrets = shard_secrets(s, master)
    s.close()
    old_wrapping = json.loads(Storage_meta(path, "dek"))["wrapped"].encode()
    new = os.urandom(32)
    assert keyring.rotate_master_key(path, master, new) == "rotated"
    assert keyring.rotate_master_key(path, master, new) == "already"    # run again: no change
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Shard.open(path, clock=clock, master_key=master)
    # the old wrapping is not left in a free page for the old key to open
    assert all(old_wrapping not in open(f, "rb").read() for f in files_under(path))
    s = Shard.open(path, clock=clock, master_key=new)
    try:
        assert shard_secrets(s, new) == secrets
        assert s.run(cmd.verify(codes[0], "north-1")).reason == Reason.OK
        assert s.check(replay=True) == []
    finally:
        s.close()
    with pytest.raises(MasterKeyError, match="neither"):
        keyring.rotate_master_key(path, master, os.urandom(32))


def Storage_meta(path: str, key: str) -> bytes:
    from turnstile.engine.storage import Storage
    return Storage.peek_meta(path, key)


def _as_before_master_keys(path: str, secrets_of) -> None:
    """Rewrite a closed shard the way builds before master keys stored it: SECRETS and
    KEY records with their secrets in clear (snapshot catalog and journal), no wrapped
    data key."""
    from turnstile.engine.storage import Storage
    holder, data_key, keys = secrets_of

    def clear(blob: bytes) -> bytes:
        out, off = [], 0
        while off < len(blob):
            length, op = _HDR.unpack_from(blob, off)
            end = off + _HDR.size + length
            rec = blob[off:end]
            if op in (Record.SECRETS, Record.KEY):
                args = json.loads(blob[off + _HDR.size:end])
                if "sealed" in args:
                    del args["sealed"]
                    if op == Record.SECRETS:
                        args = {"holder_secret": holder.hex(), "data_key": data_key.hex()}
                    else:
                        mac, seed = keys[args["key_id"]]
                        args = {**args, "mac_key": mac.hex(), "seed": seed.hex()}
                    rec = json_record(op, args)
            out.append(rec)
            off = end
        return b"".join(out)

    st = Storage(path)
    try:
        seq, blobs = st.read_snapshot()
        blobs["catalog"] = clear(blobs["catalog"])
        st.write_snapshot(seq, blobs, prune=False)
        journal = list(st.journal_after(seq))
        with st.env.begin(write=True, db=st.journal) as txn:
            for n, blob in journal:
                txn.put(n.to_bytes(8, "big"), clear(blob))
        st.put_meta({"dek": None})
    finally:
        st.close()


def test_a_shard_from_before_master_keys_is_migrated_on_open(tmp_path, clock, master):
    path = str(tmp_path / "shard-0")
    s, codes = _seeded(path, clock)
    s.close()                                                # catalog in the snapshot
    s = Shard.open(path, clock=clock)
    s.run(cmd.rotate_key())                                   # a key in the journal
    later = sell(s).tickets[0].code
    st = s.state
    secrets = shard_secrets(s, master)
    del secrets["shard data key (DEK)"]
    old = (st.holder_secret, st.data_key, {k: (v.mac_key, v.seed) for k, v in st.codec.keys.items()})
    s.close(snapshot=False)
    _as_before_master_keys(path, old)
    assert found_secrets(files_under(path), secrets)          # the old layout: in clear

    s = Shard.open(path, clock=clock, master_key=master)      # migrates
    try:
        assert {k: v for k, v in shard_secrets(s, master).items() if "DEK" not in k} == secrets
        assert s.run(cmd.verify(codes[0], "north-1")).reason == Reason.OK
        assert s.run(cmd.verify(later, "north-2")).reason == Reason.OK
        assert s.check(replay=True) == []
    finally:
        s.close()
    assert found_secrets(files_under(path), secrets) == []
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Shard.open(path, clock=clock, master_key=os.urandom(32))


def test_sealed_secrets_are_not_taken_from_a_caller(shard):
    before = (shard.state.holder_secret, dict(shard.state.codec.keys))
    for command in (Command(CommandKind.SECRETS, {"sealed": "AAAA"}),
                    Command(CommandKind.KEY, {"key_id": 9, "state": 1, "sealed": "AAAA"})):
        with pytest.raises(InvalidArgument) as e:
            shard.run(command)
        assert e.value.field == "sealed"
    assert (shard.state.holder_secret, dict(shard.state.codec.keys)) == before


def test_new_shard_dirs_are_private_whatever_the_umask(tmp_path, clock):
    old = os.umask(0)
    try:
        s = Shard.open(str(tmp_path / "a" / "b" / "shard-0"), clock=clock)
        s.run_many(demo.commands(TODAY))
        s.close()
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/shard-0"):
        assert stat.S_IMODE(os.stat(tmp_path / d).st_mode) == 0o700, d
    files = files_under(str(tmp_path / "a"))
    assert {os.path.basename(f) for f in files} >= {"data.mdb", "lock.mdb", "owner.lock"}
    assert {f: stat.S_IMODE(os.stat(f).st_mode) for f in files} == {f: 0o600 for f in files}


def test_request_digest_is_keyed_per_shard(tmp_path, clock):
    a = Shard.open(str(tmp_path / "shard-0"), clock=clock)
    b = Shard.open(str(tmp_path / "shard-1"), shard_id=1, clock=clock)
    try:
        data = b"\n\x08westlake\x12\x12110101199001011234"
        d = a.request_digest(data)
        assert len(d) == 64 and int(d, 16) >= 0
        assert d not in (hashlib.sha256(data).hexdigest(), hashlib.blake2b(data, digest_size=32).hexdigest())
        assert d == a.request_digest(data) != a.request_digest(data + b"x")
        assert d != b.request_digest(data)                 # each shard has its own key
    finally:
        a.close()
        b.close()
    again = Shard.open(str(tmp_path / "shard-0"), clock=clock)
    try:
        assert again.request_digest(data) == d             # stable: auditors can compare
    finally:
        again.close()
