"""The generated API code exists and agrees with the engine's closed sets."""
from engine import Reason, Direction


def test_scan_reasons_match_the_engine():
    from turnstile.v1 import common_pb2
    assert {r.name: r.value for r in Reason} == dict(common_pb2.ScanReason.items())
    assert common_pb2.Direction.Value("IN") == Direction.IN
    assert common_pb2.Direction.Value("OUT") == Direction.OUT
