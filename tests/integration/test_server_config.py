"""Configuration (TOML + env + options), TLS and mTLS, and reflection on the admin
port only, against a real server."""
from __future__ import annotations

import datetime as dt
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import start_server, stop_server, venue_day
from turnstile.v1 import admin_pb2, admin_pb2_grpc


def _cert(name, key, issuer_name, issuer_key, *, ca=False, san=None):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turnstile test CA")])
    ca = _cert("turnstile test CA", ca_key, ca_name, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", srv_key, ca_name, ca_key,
                san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("gate-7", cli_key, ca_name, ca_key)
    files = {"ca": _pem(ca), "srv": _pem(srv), "srv_key": _pem(srv_key), "cli": _pem(cli),
             "cli_key": _pem(cli_key)}
    paths = {}
    for k, v in files.items():
        (d / f"{k}.pem").write_bytes(v)
        paths[k] = str(d / f"{k}.pem")
    return files, paths


def _health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_tls_from_a_toml_file_with_env_override(tmp_path, pki):
    files, paths = pki
    conf = tmp_path / "turnstile.toml"
    conf.write_text(f'tls_cert = "{paths["srv"]}"\ntls_key = "{paths["srv_key"]}"\nshards = 3\n')
    server = start_server(str(tmp_path / "data"), venue_day(), ("--config", str(conf)),
                          env={"TURNSTILE_SHARDS": "1"})
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=files["ca"])
        with grpc.secure_channel(server.address, creds) as ch:
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
            m = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(
                admin_pb2.GetShardMapRequest(), metadata=server.meta("admin"), timeout=5)
            assert len(m.shards) == 1                 # the environment beat the file
        with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError) as e:
            _health(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(server)


def test_mtls_requires_a_client_certificate(tmp_path, pki):
    files, paths = pki
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "1", "--tls-cert", paths["srv"], "--tls-key", paths["srv_key"],
                           "--tls-client-ca", paths["ca"]))
    try:
        with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(files["ca"])) as ch, \
                pytest.raises(grpc.RpcError):
            _health(ch)
        creds = grpc.ssl_channel_credentials(files["ca"], files["cli_key"], files["cli"])
        with grpc.secure_channel(server.address, creds) as ch:
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop_server(server)


def test_reflection_on_the_admin_port_only(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    import socket
    with socket.socket() as sock:                      # a free port for the admin listener
        sock.bind(("127.0.0.1", 0))
        admin_port = sock.getsockname()[1]
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "1", "--admin-port", str(admin_port)))
    try:
        def services(address):
            with grpc.insecure_channel(address) as ch:
                stub = reflection_pb2_grpc.ServerReflectionStub(ch)
                req = reflection_pb2.ServerReflectionRequest(list_services="")
                resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
                return {s.name for s in resp.list_services_response.service}
        assert "turnstile.v1.GateService" in services(f"127.0.0.1:{admin_port}")
        with pytest.raises(grpc.RpcError) as e:
            services(server.address)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        stop_server(server)


def test_bad_config_is_refused_before_serving(tmp_path):
    import subprocess, sys
    from tests.integration.conftest import ROOT
    r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "serve", "--data", str(tmp_path), "--port", "-5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "port" in (r.stderr + r.stdout)


def test_a_retry_window_shorter_than_the_offline_window_is_refused(tmp_path):
    """An offline scan may be uploaded up to offline_window_s after it was made; its first
    answer (a scan id decided online) must still be kept then (issue 12)."""
    import subprocess, sys
    from tests.integration.conftest import ROOT
    r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "serve", "--data",
                        str(tmp_path / "d"), "--port", "0", "--offline-window-s", "86400",
                        "--retry-window-s", "7200"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "retry_window_s" in (r.stderr + r.stdout)
    assert not (tmp_path / "d" / "shard-0").exists()
