# smtpapi-milter: `make demo` shows it working, `make test` proves it. Both install what
# they need on a fresh Debian machine (apt as root, a .venv here).

# The interpreter the .venv is made from: the system's, as `make install` uses, so tests and
# benchmarks run the milter on what a mail server runs it on. One first on PATH may be slower:
# this machine's pyenv 3.11.7 (configured without --enable-optimizations, libpython shared)
# took 0.96-0.98 ms of CPU a mail-merged message in the milter (bench/milter_cpu.py), Debian's
# 3.11.2 (libpython linked into the executable) 0.68-0.70; with the CPU caches cold between
# messages, as under Postfix, 1.60-1.70 against 1.61. python3 on PATH where there is none.
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# m4, libwrap0, liblockfile1, iproute2: the unpacked Sendmail of the end-to-end tests (its .cf,
# its libraries, `ip link set lo up` in its namespace); systemd: systemd-analyze for the units;
# chromium: the dashboard tests; nftables: the tracker's per-client cap (packaging/nftables);
# libsystemd-dev, pkg-config: to build systemd-python (the maillog follower's journald
# source); systemd-journal-remote: real journal files for its test; libssl-dev, zlib1g-dev: the
# C link tokens (milter/smtpapi_milter/_native/tokenmint.c: OpenSSL's AES-SIV; zlib: the opener inflates);
# python3-dev: Python.h for our C extensions and pymilter's.
APT_PACKAGES := gcc python3-dev libmilter-dev postfix swaks miltertest postgresql \
	m4 libwrap0 liblockfile1 iproute2 systemd chromium nftables \
	libsystemd-dev pkg-config systemd-journal-remote libssl-dev zlib1g-dev
# pflogsumm: the Postfix log summariser the maillog follower is measured against.
BENCH_PACKAGES := wrk nginx-light pflogsumm
CORPUS ?= $(abspath ../shared/corpus)

.PHONY: all demo test lint unit bench fuzz deps bench-deps venv sendmail clean install uninstall FORCE

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

# A .venv made from another interpreter than PYTHON (before, checkouts used python3 on PATH)
# is made again, from PYTHON.
VENV_FROM := $(shell sed -n 's/^executable = //p' $(VENV)/pyvenv.cfg 2>/dev/null)
PYTHON_IS := $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null)
VENV_STALE := $(if $(and $(VENV_FROM),$(PYTHON_IS)),$(filter-out $(PYTHON_IS),$(VENV_FROM)))

$(STAMP): pyproject.toml setup.cfg setup.py $(wildcard milter/smtpapi_milter/_native/*.c) \
		$(if $(VENV_STALE),FORCE) | deps
	$(PYTHON) -m venv $(if $(VENV_STALE),--clear) $(VENV)
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

# --- make install / make uninstall: a mail server (README "Install on a mail server") -------
# The program in its own venv under OPT_DIR (non-editable, from a wheel of this checkout), the
# command on PATH as a symlink into it, the units, sysusers.d and tmpfiles.d entries in the
# vendor directories (/usr/lib/...: `systemctl edit` overrides in /etc/systemd/system stay the
# admin's and survive uninstall), the MTA snippets, example policies and the default config
# under DATA_DIR, and the config in CONF_DIR unless one is there. DESTDIR stages the whole
# tree for a package; the venv is made at DESTDIR/OPT_DIR and then relocated to OPT_DIR.
DESTDIR ?=
PREFIX ?= /usr
OPT_DIR ?= /opt/smtpapi-milter
BIN_DIR ?= $(PREFIX)/bin
UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSUSERS_DIR ?= $(PREFIX)/lib/sysusers.d
TMPFILES_DIR ?= $(PREFIX)/lib/tmpfiles.d
DATA_DIR ?= $(PREFIX)/share/smtpapi-milter
CONF_DIR ?= /etc/smtpapi-milter
STATE_DIR ?= /var/lib/smtpapi-milter
# The interpreter the installed venv is made from: the system's, never a dev .venv on PATH.
INSTALL_PYTHON ?= /usr/bin/python3
# To build pymilter (a C extension against libmilter), systemd-python (against libsystemd,
# found by pkg-config) and our own extensions (milter/smtpapi_milter/_native: OpenSSL, zlib);
# nothing of the test tooling.
INSTALL_APT_PACKAGES := gcc python3-dev libmilter-dev libsystemd-dev pkg-config libssl-dev zlib1g-dev
ROOTDIR := $(if $(DESTDIR),$(abspath $(DESTDIR)))
OPT := $(ROOTDIR)$(OPT_DIR)
PIP_INSTALL := $(OPT)/bin/python -m pip --disable-pip-version-check

install:
	$(call apt_install,$(INSTALL_APT_PACKAGES))
	@case "$(OPT_DIR)" in /*/*) ;; *) echo "OPT_DIR=$(OPT_DIR): need an absolute path like /opt/smtpapi-milter" >&2; exit 1;; esac
	$(INSTALL_PYTHON) -m venv $(OPT)
	@# A wheel (non-editable: the installed copy never reads this checkout), then its
	@# dependencies; our own package again by force, in case this version was installed before.
	wheels=$$(mktemp -d) && trap 'rm -rf "$$wheels"' EXIT && \
	$(PIP_INSTALL) wheel -q --no-deps -w "$$wheels" . && \
	$(PIP_INSTALL) install -q $(if $(ROOTDIR),--no-compile) "$$wheels"/*.whl && \
	$(PIP_INSTALL) install -q $(if $(ROOTDIR),--no-compile) --force-reinstall --no-deps "$$wheels"/*.whl
	@# Staged under DESTDIR, scripts' #! lines and pyvenv.cfg name the staging path: point them
	@# at OPT_DIR, and compile with the final paths in the bytecode (tracebacks show real files).
	$(if $(ROOTDIR),grep -rlIF '$(OPT)' $(OPT)/bin $(OPT)/pyvenv.cfg | xargs -r sed -i 's|$(OPT)|$(OPT_DIR)|g')
	$(if $(ROOTDIR),find $(OPT)/lib -name __pycache__ -prune -exec rm -rf {} +)
	$(if $(ROOTDIR),$(OPT)/bin/python -m compileall -q -s '$(ROOTDIR)' -p / $(OPT)/lib >/dev/null)
	install -d $(ROOTDIR)$(BIN_DIR) $(ROOTDIR)$(UNIT_DIR) $(ROOTDIR)$(SYSUSERS_DIR) $(ROOTDIR)$(TMPFILES_DIR)
	ln -sfn $(OPT_DIR)/bin/smtpapi-milter $(ROOTDIR)$(BIN_DIR)/smtpapi-milter
	for unit in packaging/systemd/*; do \
	  sed 's|/usr/bin/smtpapi-milter|$(BIN_DIR)/smtpapi-milter|g' $$unit > $(ROOTDIR)$(UNIT_DIR)/$${unit##*/}; \
	  chmod 644 $(ROOTDIR)$(UNIT_DIR)/$${unit##*/}; \
	done
	install -m 644 packaging/sysusers.d/smtpapi-milter.conf $(ROOTDIR)$(SYSUSERS_DIR)/smtpapi-milter.conf
	install -m 644 packaging/tmpfiles.d/smtpapi-milter.conf $(ROOTDIR)$(TMPFILES_DIR)/smtpapi-milter.conf
	install -d $(ROOTDIR)$(DATA_DIR)/postfix $(ROOTDIR)$(DATA_DIR)/sendmail $(ROOTDIR)$(DATA_DIR)/policies \
	  $(ROOTDIR)$(DATA_DIR)/nftables
	install -m 644 packaging/postfix/*.snippet $(ROOTDIR)$(DATA_DIR)/postfix/
	install -m 644 packaging/sendmail/*.mc $(ROOTDIR)$(DATA_DIR)/sendmail/
	install -m 644 packaging/nftables/*.nft $(ROOTDIR)$(DATA_DIR)/nftables/
	install -m 644 policies/*.py $(ROOTDIR)$(DATA_DIR)/policies/
	install -m 644 packaging/smtpapi-milter.toml $(ROOTDIR)$(DATA_DIR)/smtpapi-milter.toml
	@# The config: never over an existing one (it is the admin's). 0640: it may hold keys and
	@# tokens; systemd-tmpfiles gives it to the smtpapi group once systemd-sysusers made it.
	install -d -m 750 $(ROOTDIR)$(CONF_DIR)
	@if [ -e $(ROOTDIR)$(CONF_DIR)/smtpapi-milter.toml ]; then \
	  echo "kept $(ROOTDIR)$(CONF_DIR)/smtpapi-milter.toml; the new defaults are in $(DATA_DIR)/smtpapi-milter.toml"; \
	else \
	  install -m 640 packaging/smtpapi-milter.toml $(ROOTDIR)$(CONF_DIR)/smtpapi-milter.toml; \
	fi
	@if [ -z "$(ROOTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed: $(BIN_DIR)/smtpapi-milter -> $(OPT_DIR); next: README, Install on a mail server"

uninstall:
	@case "$(OPT_DIR)" in /*/*) ;; *) echo "OPT_DIR=$(OPT_DIR): need an absolute path like /opt/smtpapi-milter" >&2; exit 1;; esac
	@# Running services would lose their program at their next restart: stop them first.
	@if [ -z "$(ROOTDIR)" ] && [ -d /run/systemd/system ]; then \
	  for unit in smtpapi-milter.service smtpapi-milter.socket smtpapi-milter-activated.service smtpapi-tracker.service; do \
	    if systemctl is-active --quiet $$unit; then \
	      echo "$$unit is running: systemctl disable --now $$unit first" >&2; exit 1; \
	    fi; \
	  done; \
	fi
	rm -rf $(OPT)
	rm -f $(ROOTDIR)$(BIN_DIR)/smtpapi-milter
	for unit in packaging/systemd/*; do rm -f $(ROOTDIR)$(UNIT_DIR)/$${unit##*/}; done
	rm -f $(ROOTDIR)$(SYSUSERS_DIR)/smtpapi-milter.conf $(ROOTDIR)$(TMPFILES_DIR)/smtpapi-milter.conf
	rm -rf $(ROOTDIR)$(DATA_DIR)
	@if [ -z "$(ROOTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(ROOTDIR)$(CONF_DIR) (configuration, policies) and $(ROOTDIR)$(STATE_DIR) (link keys, events), and the smtpapi user: remove them yourself if you mean to"

FORCE:
