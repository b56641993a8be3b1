"""Server configuration: one TOML file, TURNSTILE_* environment variables, and the
command line, in rising precedence (pydantic-settings).

    # turnstile.toml
    data = "/var/lib/turnstile"
    port = 50051
    shards = 4
    tls_cert = "/etc/turnstile/server.crt"
    tls_key = "/etc/turnstile/server.key"
    master_key_file = "/etc/turnstile/master.key"

    TURNSTILE_PORT=6000 turnstile serve --config turnstile.toml --shards 2
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource


WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


class ServerConfig(BaseSettings):
    """Every option of `turnstile serve`; each has a TURNSTILE_<NAME> variable."""

    model_config = SettingsConfigDict(env_prefix="TURNSTILE_", extra="forbid")

    data: str = Field("data", description="data dir")
    host: str = Field("127.0.0.1", description="address to listen on")
    advertise_host: str = Field("", description="host clients and the other nodes reach this "
                                                "node at, as the shard map names its shards "
                                                "(default: --host); replicated mode with a "
                                                "wildcard --host (0.0.0.0, ::) needs it, or every "
                                                "node would be named alike in etcd")
    port: int = Field(50051, ge=0, le=65535,
                      description="port of shard 0, shard k listens on PORT+k; 0 picks free ports")
    admin_port: int = Field(0, ge=0, le=65535,
                            description="port of shard 0's admin listener (every service plus "
                                        "gRPC reflection), shard k on ADMIN_PORT+k; 0 = none")
    metrics_port: int = Field(0, ge=0, le=65535,
                              description="port of shard 0's Prometheus metrics (HTTP GET "
                                          "/metrics), shard k on METRICS_PORT+k; 0 = no metrics "
                                          "endpoint")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoints listen on")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines on stderr: text, or json (one JSON object a line)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="least level logged: DEBUG (also every successful scan), INFO "
                            "(mutations, errors, lifecycle), WARNING or ERROR")
    shards: int | None = Field(None, ge=1, le=256, description="number of shards (default: the count "
                                                            "`turnstile shards set-count` recorded, "
                                                            "else one per core)")
    max_queue: int = Field(100_000, ge=1,
                           description="commands queued per shard before calls are shed with "
                                       "RESOURCE_EXHAUSTED")
    grace_s: float = Field(5.0, ge=0, description="seconds in-flight calls get on shutdown")
    restart_backoff_s: float = Field(0.5, gt=0, le=3600,
                                     description="seconds before a dead shard process is "
                                                 "restarted; doubles with each crash in a row, up "
                                                 "to RESTART_BACKOFF_MAX_S, back to this once a "
                                                 "shard has run 60 s")
    restart_backoff_max_s: float = Field(30.0, gt=0, le=3600,
                                         description="the longest wait before restarting a shard "
                                                     "that keeps dying (it is restarted for ever)")
    auth_cache_s: float = Field(5.0, ge=0,
                                description="seconds each shard reuses an API key's principal and "
                                            "a caller's access decision: a revoked key stops "
                                            "working within this; 0 = no caching")
    scan_skew_s: int = Field(300, ge=0, le=86400,
                             description="seconds an online scan's scan_time may differ from the "
                                         "server's clock (scans are decided at the server's time)")
    clock_offset_s: int = Field(0, ge=-10 * 366 * 86400, le=10 * 366 * 86400,
                                description="seconds added to the machine's clock to make the "
                                            "server's time: for drills and tests; 0 in production")
    offline_window_s: int = Field(7 * 86400, ge=3600, le=90 * 86400,
                                  description="how far back an uploaded offline scan's time may lie")
    gate_heartbeat_s: int = Field(10, ge=1, le=3600,
                                  description="seconds between a gate's heartbeats (GateService."
                                              "Heartbeat tells the gates)")
    gate_down_after_s: int = Field(30, ge=2, le=86400,
                                   description="a gate not heard from for this many seconds shows "
                                               "as down on the live view; more than "
                                               "gate_heartbeat_s")
    audit_archive_s: float = Field(3600.0, ge=0,
                                   description="seconds between archivings of each shard's old "
                                               "audit records to files in DATA/shard-N/audit "
                                               "(verified, then pruned from the shard); 0 = only "
                                               "by `turnstile audit archive`")
    map_size_mib: int = Field(64 << 10, ge=16, le=64 << 20,
                              description="LMDB map size of each shard in MiB (a sparse file grows "
                                          "into it): a warning once 80 percent is in use; commands "
                                          "refused with RESOURCE_EXHAUSTED STORAGE_FULL when less "
                                          "than 1 percent (at least 64 MiB, at most a quarter) is "
                                          "left; raise it and restart to go on")
    retry_window_s: int = Field(7 * 86400, ge=3600, le=366 * 86400,
                                description="seconds rows kept only to answer retries (idempotency "
                                            "keys, scan ids, batch ids, offline nonces, ended "
                                            "holds) are kept at least, then pruned (after at most "
                                            "twice this); not less than offline_window_s")
    tls_cert: str | None = Field(None, description="PEM certificate chain: serve TLS")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: require client "
                                                        "certificates signed by it (mTLS)")
    etcd: str = Field("", description="etcd endpoint (host:port); with pg: replicated mode "
                                      "(DESIGN.md 7): each shard process follows its shard's "
                                      "log of record as a standby until it owns the shard in "
                                      "etcd, then serves as its primary")
    pg: str = Field("", description="libpq connection string of the PostgreSQL database that "
                                    "holds the log of record (its primary, run with a "
                                    "synchronous standby); with etcd: replicated mode. It "
                                    "may hold a password: give it in the TOML file or "
                                    "TURNSTILE_PG, not on the command line (the shard "
                                    "processes get it in their environment)")
    cluster: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                         description="name of this platform in etcd (its shard map: "
                                     "owners, epochs, nodes, venues), replicated mode")
    lease_ttl_s: int = Field(5, ge=2, le=60,
                             description="seconds of a shard owner's etcd lease, replicated "
                                         "mode: a primary that can't renew it stops "
                                         "acknowledging a second before it lapses; a standby "
                                         "takes over once it has")
    standby: bool = Field(False, description="replicated mode: this node prefers to be the "
                                             "standby -- at start it lets a node without "
                                             "--standby take each shard nobody owns, for "
                                             "3 leases at most, then contends as any node "
                                             "(a primary that dies is always taken over)")
    log_prune_s: float = Field(60.0, ge=0, le=86400,
                               description="seconds between prunings of the log of record by "
                                           "a primary, replicated mode: batches every node of "
                                           "the shard and its latest verified backup "
                                           "(`turnstile backup --etcd`) hold are deleted; 0: "
                                           "never")
    master_key_file: str | None = Field(None, description="file of the master key that wraps "
                                                          "every shard's keys (64 hex digits; "
                                                          "kept outside the data dir); else "
                                                          "TURNSTILE_MASTER_KEY holds the key "
                                                          "itself")

    @model_validator(mode="after")
    def _gate_down_after_heartbeats(self) -> "ServerConfig":
        if self.gate_down_after_s <= self.gate_heartbeat_s:
            raise ValueError("gate_down_after_s must be more than gate_heartbeat_s: a gate on "
                             "time would show as down between two heartbeats")
        return self

    @model_validator(mode="after")
    def _retry_outlives_offline(self) -> "ServerConfig":
        if self.retry_window_s < self.offline_window_s:
            raise ValueError("retry_window_s must not be less than offline_window_s: an offline "
                             "scan uploaded within its window must still find its first answer")
        return self

    @model_validator(mode="after")
    def _replicated_needs_both(self) -> "ServerConfig":
        if bool(self.etcd) != bool(self.pg):
            raise ValueError("etcd and pg go together (replicated mode needs both)")
        if self.etcd and not self.advertise_host and self.host in WILDCARD_HOSTS:
            raise ValueError(f"replicated mode listening on {self.host or 'every address'} needs "
                             "advertise_host: the address other machines and clients reach this "
                             "node at (it names the node in etcd's shard map)")
        return self

    @property
    def advertised(self) -> str:
        """The host the shard map names this node's shards at."""
        return self.advertise_host or self.host

    @property
    def replicated(self) -> bool:
        return bool(self.etcd and self.pg)

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value, info):
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    def tls(self) -> tuple[bytes, bytes, bytes | None] | None:
        if not self.tls_cert and not self.tls_key:
            return None
        if not (self.tls_cert and self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        ca = open(self.tls_client_ca, "rb").read() if self.tls_client_ca else None
        return open(self.tls_cert, "rb").read(), open(self.tls_key, "rb").read(), ca


def load(config_file: str | None = None, **overrides) -> ServerConfig:
    """The configuration: `overrides` (command line; None = not given) over the
    environment over `config_file` (TOML) over the defaults."""

    class _FromFile(ServerConfig):
        model_config = SettingsConfigDict(env_prefix="TURNSTILE_", extra="forbid",
                                          toml_file=config_file)

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            sources = [init_settings, env_settings]
            if config_file:
                sources.append(TomlConfigSettingsSource(settings_cls))
            return tuple(sources)

    cfg = _FromFile(**{k: v for k, v in overrides.items() if v is not None})
    return ServerConfig.model_construct(**cfg.model_dump())
