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
	$(BIN)/python -m pip install -q --no-deps "pyiqa==0.1.16"  # MUSIQ only: its deps would replace headless cv2
	test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vidmill samples demo-samples
	$(BIN)/vidmill curate demo-samples demo-out
	$(BIN)/vidmill dashboard demo-out --export demo-out/report.html
	$(BIN)/vidmill train --data demo-out --config configs/train-tiny.yaml --out demo-run --no-progress
	$(BIN)/python -c "import glob, tarfile; t = tarfile.open(sorted(glob.glob('demo-out/shards/*.tar'))[0]); \
	m = next(x for x in t.getmembers() if x.name.endswith('.mp4')); \
	open('demo-out/first-clip.mp4', 'wb').write(t.extractfile(m).read())"
	$(BIN)/vidmill generate --checkpoint demo-run --image demo-out/first-clip.mp4 --prompt "a short clip" \
		--seconds 2 --out demo-out/generated.mp4
	$(BIN)/vidmill eval demo-set demo-out demo-out/physics-iq-demo --run demo-run
	$(BIN)/vidmill eval checkpoint demo-run --physics-iq-real demo-out/physics-iq-demo \
		--vbench-images demo-out/physics-iq-demo/switch-frames --threads 1 --summary demo-out/eval.json \
		--note "machinery check on the demo's own clips, NOT benchmark numbers (no Physics-IQ data, no VBench weights)"
	@echo "dashboard report: demo-out/report.html; generated video: demo-out/generated.mp4; evaluation: demo-out/eval.json"
	@echo "serve the dashboard: $(BIN)/vidmill dashboard demo-out --train-run demo-run   (then open http://127.0.0.1:8765/)"

test: $(STAMP)
	$(BIN)/ruff check vidmill pipeline model training evaluation dashboards tests bench
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check vidmill pipeline model training evaluation dashboards tests bench

bench: $(STAMP)
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/eval.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf demo-samples demo-out demo-run bench-out
