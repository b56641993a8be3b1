"""The generated API code exists and agrees with the engine's closed sets."""
from turnstile.engine import Reason, Direction


def test_scan_reasons_match_the_engine():
    from turnstile.v1 import common_pb2
    assert {r.name: r.value for r in Reason} == dict(common_pb2.ScanReason.items())
    assert common_pb2.Direction.Value("IN") == Direction.IN
    assert common_pb2.Direction.Value("OUT") == Direction.OUT


def test_every_message_field_and_rpc_has_a_comment():
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[2] / "proto"
    missing = []
    decl = re.compile(r"^\s*(message|enum|service|rpc)\s+\w+|^\s*(repeated\s+|optional\s+)?[\w.<>, ]+\s+\w+\s*=\s*\d+;")
    for path in sorted(root.rglob("*.proto")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if decl.match(line) and not line.strip().startswith("//"):
                prev = lines[i - 1].strip() if i else ""
                if not prev.startswith("//") and "//" not in line:
                    missing.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not missing, "\n".join(missing)
