# quicdist — every target sets itself up (venv, build, Erlang) before it runs.
#   make demo   run the demo
#   make test   run the whole test suite, on the Cython fast path and then on
#               the pure-Python twin (plus ruff)
#   make bench  print the benchmarks as JSON (term codec, framing, carrier, node,
#               user streams, Python <-> Erlang interop)
#   make fuzz   long fuzz run of the fast decoder (>= 1 million inputs)
#   make soak   the carrier's loss, process and socket tests and the user-stream
#               tests many times over (plus a 1 GiB stream transfer), and the
#               differential / state-machine tests with many more examples

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.quicdist-installed
PYTEST_ARGS ?=

.PHONY: all demo test test-fast test-pure lint bench fuzz soak erlang build clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Editable install; setuptools compiles the extension into the source tree.
# Rebuilt whenever the build inputs change; QUICDIST_REQUIRE_EXTENSIONS makes
# a failed compile an error instead of a silent fallback.
$(STAMP): $(PY) pyproject.toml setup.py constraints.txt $(wildcard quicdist/*.pyx quicdist/*.pxi)
	QUICDIST_REQUIRE_EXTENSIONS=1 $(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

build: $(STAMP)

# Debian's erlang-nox (OTP 25) for the golden-vector and interop tests and the
# interop benchmark.
erlang:
	@if ! command -v erl >/dev/null 2>&1 || ! command -v erlc >/dev/null 2>&1; then \
	  echo "installing erlang-nox (OTP) for the interop tests"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq erlang-nox >/dev/null \
	  || echo "WARNING: could not install erlang-nox; tests marked 'erl' will be skipped"; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check quicdist tests bench examples
	$(PY) -m mypy

test-fast: $(STAMP) erlang
	QUICDIST_REQUIRE_EXTENSIONS=1 $(PY) -m pytest $(PYTEST_ARGS)

test-pure: $(STAMP) erlang
	QUICDIST_NO_EXTENSIONS=1 $(PY) -m pytest $(PYTEST_ARGS)

test: lint test-fast test-pure

demo: $(STAMP)
	$(PY) examples/demo.py

bench: $(STAMP) erlang
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(PY) -m bench etf
	$(PY) -m bench framing
	$(PY) -m bench carrier
	$(PY) -m bench node
	$(PY) -m bench streams
	$(PY) -m bench interop

fuzz: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[fuzz]'
	QUICDIST_REQUIRE_EXTENSIONS=1 $(PY) tests/fuzz_decode.py -atheris_runs=$${FUZZ_RUNS:-1000000}

SOAK_ROUNDS ?= 20
soak: $(STAMP)
	QUICDIST_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q -o faulthandler_timeout=0 --timeout=0 \
	  tests/test_fastpath_equivalence.py tests/test_framing.py tests/test_scheduler.py
	QUICDIST_SOAK=1 $(PY) -m pytest -q -p no:randomly -m soak tests/test_streams_process.py
	for i in $$(seq $(SOAK_ROUNDS)); do \
	  echo "soak round $$i/$(SOAK_ROUNDS)"; \
	  $(PY) -m pytest -q -x -p no:randomly tests/test_carrier.py tests/test_carrier_loss.py \
	    tests/test_carrier_process.py tests/test_carrier_control.py tests/test_carrier_steady.py \
	    tests/test_wakeup.py \
	    tests/test_streams.py tests/test_streams_process.py || exit 1; \
	done

clean:
	rm -rf build *.egg-info quicdist/_fastpath.c quicdist/*.so .pytest_cache .hypothesis
