# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install sandbox demo test test-slow test-gpu gpu-wheels test-verl bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes in first, pinned, so no later resolver step can pull a CUDA build.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) sandbox

# The code verifier isolates generated programs with bubblewrap: installed here when we are root
# with apt (as on the project's machines); elsewhere the verifier's error says how.
sandbox:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: bubblewrap (bwrap) is missing; install it (apt-get install bubblewrap) for the code verifier"; fi; }

demo: $(STAMP) sandbox
	$(VENV)/bin/rlvr-explore demo

test: $(STAMP) sandbox
	$(PY) -m pytest

# exit 5 is pytest's "no test collected": none is marked slow at the moment
test-slow: $(STAMP) sandbox
	$(PY) -m pytest -m slow || [ $$? -eq 5 ]

# On a machine with CUDA and its own torch (not the pinned CPU wheel): the tests marked gpu.
test-gpu:
	PYTHONPATH=src $(PYTHON) -m pytest -m gpu -p no:cacheprovider

# Before a GPU lease without network: the wheels benchmarks/gpu.sh installs there (carry .whl with the run).
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu-wheels.txt

# The verl plugin against the real verl (CPU is enough); a separate venv, since verl pulls ~2 GB.
VERL_VENV := .venv-verl
test-verl:
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	# verl-core: what verl's default (v1) trainer imports beside verl itself (TransferQueue, the server parts)
	$(VERL_VENV)/bin/python -m pip install -q -c constraints.txt "verl[verl-core]==0.9.1" -e ".[dev,verl]"
	$(VERL_VENV)/bin/python -m pytest tests/test_verl.py

bench: $(STAMP)
	$(PY) benchmarks/bench_candidates.py

clean:
	rm -rf $(VENV) $(VERL_VENV) build src/*.egg-info .pytest_cache
