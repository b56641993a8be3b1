# Two commands do all the set-up on a machine with Python 3.11, gcc and make:
#   make run    build, seed a demo venue into ./data if empty, serve gRPC on 127.0.0.1:50051
#               and the live dashboard on http://127.0.0.1:8080/
#               (the master key that wraps its keys: ./data.master-key, made if absent)
#   make test   build and run the whole test suite
# `make bench` runs the benchmarks and rewrites bench/RESULTS.md (the replicated mode's
# section too, on etcd and PostgreSQL as the tests run them); `make soak` the season soak.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
# beside the data dir, never in it: whoever copies the data dir must not get the key
MASTER_KEY ?= $(patsubst %/,%,$(DATA)).master-key
DASHBOARD_PORT ?= 8080
STAMP  := $(VENV)/.stamp-install
SOURCES := setup.py pyproject.toml $(wildcard native/*.pyx native/*.pxi native/*.pxd) $(shell find proto -name '*.proto')

.PHONY: install run test bench soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install (and rebuild the core and the proto code) when a build input changes.
$(STAMP): $(PY) $(SOURCES)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "Cython>=3.0,<4" "grpcio-tools>=1.85.1,<1.86"
	$(PY) -m pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/turnstile master-key create --if-absent $(MASTER_KEY)
	$(VENV)/bin/turnstile demo --data $(DATA) --master-key-file $(MASTER_KEY)
	$(VENV)/bin/turnstile check --data $(DATA) --master-key-file $(MASTER_KEY)
	@# the dashboard is a client of the API like any other: it waits for the server, and
	@# stops with it (Ctrl-C reaches both; the trap covers a server that exits by itself)
	$(VENV)/bin/turnstile dashboard --address 127.0.0.1:50051 --port $(DASHBOARD_PORT) & dash=$$!; \
	trap 'kill $$dash 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/turnstile serve --data $(DATA) --master-key-file $(MASTER_KEY)

# the suite in TEST_JOBS processes (pytest-xdist), each test file whole in one of them
# (its module's server and state stay together); TEST_JOBS=0 runs it in this process
TEST_JOBS ?= 2
# the replicated mode's tests run real etcd and PostgreSQL (Debian's packages; installed
# here if missing and run as root, else named): tests/services.py starts them on 127.0.0.1
test: install
	bash scripts/install-services.sh
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

bench: install
	bash scripts/install-services.sh
	$(PY) -m bench.run
	$(PY) -m bench.replicated --out bench/RESULTS.md

# The season soak (a compressed holiday week, 5-10 minutes): its run "current" goes into
# bench/RESULTS.md's season section; `make bench` keeps that section.
soak: install
	$(PY) -m bench.season --out bench/RESULTS.md --label current

clean:
	rm -rf build $(VENV) engine/*.so native/*.c native/*.html
	find proto -name '*_pb2*.py*' -delete
