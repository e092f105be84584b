# smtpapi-milter: `make demo` shows it working, `make test` proves it. Both install what
# they need on a fresh Debian machine (apt as root, a .venv here).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# m4, libwrap0, liblockfile1, iproute2: the unpacked Sendmail of the end-to-end tests (its .cf,
# its libraries, `ip link set lo up` in its namespace); systemd: systemd-analyze for the units;
# chromium: the dashboard tests; nftables: the tracker's per-client cap (packaging/nftables).
APT_PACKAGES := gcc libmilter-dev postfix swaks miltertest postgresql \
	m4 libwrap0 liblockfile1 iproute2 systemd chromium nftables
BENCH_PACKAGES := wrk nginx-light
CORPUS ?= $(abspath ../shared/corpus)

.PHONY: all demo test lint unit bench fuzz deps bench-deps venv sendmail clean

all: test

# System packages: only what is missing, so a warm machine pays nothing.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get install$$missing" >&2; exit 1; fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(APT_PACKAGES))

# The load generator and the reference server the tracker is measured against.
bench-deps: deps
	$(call apt_install,$(BENCH_PACKAGES))

$(STAMP): pyproject.toml setup.cfg | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: deps $(STAMP)

# Sendmail conflicts with postfix as a package, so the tests run it unpacked: apt-get download
# (no root needed) and dpkg -x into a cache in the venv, keyed by version; a warm cache is free.
sendmail: venv
	$(PY) -m tests.harness.sendmail

lint: venv
	$(VENV)/bin/ruff check milter tests policies bench
	$(VENV)/bin/ruff format --check milter tests policies bench

unit: venv sendmail
	SMTPAPI_CORPUS=$(CORPUS) $(VENV)/bin/pytest -q

test: lint unit

demo: venv
	@$(VENV)/bin/smtpapi-milter demo

bench: venv bench-deps
	SMTPAPI_CORPUS=$(CORPUS) $(PY) bench/run_all.py

# Every atheris target for FUZZ_SECONDS each; FUZZ_DIR keeps corpora and reproducers.
FUZZ_SECONDS ?= 600
FUZZ_DIR ?=
fuzz: venv
	SMTPAPI_CORPUS=$(CORPUS) $(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS) \
	  $(if $(FUZZ_DIR),--workdir $(FUZZ_DIR))

clean:
	rm -rf $(VENV) build dist *.egg-info milter/*.egg-info .pytest_cache .ruff_cache
