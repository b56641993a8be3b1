#!/usr/bin/env bash
# etcd and PostgreSQL 15 from Debian's packages, for the replicated mode's tests and
# benchmarks (tests/services.py runs them on 127.0.0.1, in the tests' own directories).
# Installs what is missing, as root; as another user it only says what is missing.
# Nothing is started here: no service is enabled, the tests start and stop their own.
set -euo pipefail
need=()
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (Debian packages); install them as root: $0" >&2
    exit 0
fi
apt-get update -qq >/dev/null
# policy-rc.d: the packages' own service starts are refused (no system-wide etcd or
# PostgreSQL cluster listening anywhere); the tests run their own
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
