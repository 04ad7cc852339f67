# Each target bootstraps .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test bench clean-venv

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/duc-hdc demo --workdir demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

# ONNX Runtime / OpenVINO (+ NNCF) need numpy 2: their own venv, never the package's
# requirements. NNCF is optional (OpenVINO int8 is skipped when it does not install).
PEERS       := bench/.venv-peers
PEERS_STAMP := $(PEERS)/.installed
BENCH_ARGS  ?=

$(PEERS_STAMP): bench/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet -r bench/peers-requirements.txt
	-$(PEERS)/bin/pip install --quiet nncf
	touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV) $(PEERS)
