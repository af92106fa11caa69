# Two set-up commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. A GPU machine sets TORCH_INDEX to a CUDA index, e.g.
# https://download.pytorch.org/whl/cu128
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

export MLOPS_HOME ?= $(CURDIR)/.mlops
export DAGSTER_HOME ?= $(MLOPS_HOME)/dagster

.PHONY: install demo test lint format test-integration ui mlflow-ui clean
.PHONY: bench-drift bench-validate bench-train bench-figures bench-explain bench-score bench-batch bench-serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# The torch wheel alone from a local folder of wheels (pip's find-links) when this machine has
	@# one, else from PyTorch's CPU index: never PyPI's default torch, a multi-GB CUDA build. The
	@# project install below then resolves torch's own dependencies from PyPI.
	$(BIN)/pip install --no-deps --no-index "torch==$(TORCH_VERSION)" 2>/dev/null \
	  || $(BIN)/pip install --timeout 30 --retries 1 "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX)
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: install
	$(BIN)/mlops demo

# The linter and the formatter's check first: a style error fails in seconds, not after the suite.
test: install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The production profile on real services (scripts/prod-stack.sh: PostgreSQL, an MLflow server),
# started and stopped by the tests; as root it apt-get installs postgresql when it is missing.
test-integration: install
	MLOPS_INTEGRATION=1 $(BIN)/pytest tests/integration

ui: install
	$(BIN)/mlops init
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLOPS_HOME)/mlflow.db --host 127.0.0.1 --port 5000

bench-drift: install
	$(BIN)/python benchmarks/bench_drift.py

bench-validate: install
	$(BIN)/python benchmarks/bench_validate.py

bench-batch: install
	$(BIN)/python benchmarks/bench_batch.py

bench-train: install
	$(BIN)/python benchmarks/bench_train.py

bench-figures: install
	$(BIN)/python benchmarks/bench_figures.py

# Per-row TreeSHAP against shap's TreeExplainer (a dev dependency) on the demo's and a synthetic model.
bench-explain: install
	$(BIN)/python benchmarks/bench_explain.py

bench-score: install
	$(BIN)/python benchmarks/bench_score.py

# One-row latency of mlops serve (shadow and request log on) against mlflow models serve, alias moves under load.
bench-serve: install
	@# wrk measures the closed-loop peak (the Python generator's own CPU would cap it); installed
	@# here when missing and root, else bench_serve.py falls back to the Python generator and says so.
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| echo "wrk could not be installed: the Python generator measures the peak"
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf $(MLOPS_HOME)
