# Every target does its own set-up on a fresh machine: a virtual environment in .venv with
# vidmill and its dependencies (torch/torchvision pinned to the builds this machine type carries).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev,filters,text]"
	test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vidmill samples demo-samples
	$(BIN)/vidmill curate demo-samples demo-out
	$(BIN)/vidmill dashboard demo-out --export demo-out/report.html
	@echo "serve the dashboard: $(BIN)/vidmill dashboard demo-out   (then open http://127.0.0.1:8765/)"

test: $(STAMP)
	$(BIN)/ruff check vidmill pipeline model training evaluation dashboards tests bench
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check vidmill pipeline model training evaluation dashboards tests bench

bench: $(STAMP)
	$(BIN)/python bench/curate.py

clean:
	rm -rf demo-samples demo-out bench-out
