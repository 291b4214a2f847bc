# The README's two commands: `make run` (set up, then the default job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# flwr starts its local SuperLink as `flower-superlink` from PATH: the venv's, not another one.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export HF_HUB_OFFLINE := 1
# flwr run --stream prints a run's lines with print(): unbuffered, they reach the pipe to tee as they come.
export PYTHONUNBUFFERED := 1
FLWR_HOME ?= $(CURDIR)/.flwr-home
export FLWR_HOME
OUT ?= $(CURDIR)/outputs
RUN_CONFIG ?=

.PHONY: setup run test sweep

$(BIN)/flwr: pyproject.toml
	@bash scripts/setup.sh $(PY) $(VENV)
	@touch $@

setup: $(BIN)/flwr

# The run config is checked first (a bad key or value: one line naming it, in seconds). flwr run
# exits 0 even when the run fails, so its output is kept in $(OUT)/last-run.log and a failed
# run makes `make run` fail. The run's own log is <run folder>/flwr.log. Flower's local SuperLink
# listens on 39091 (control 39093) unless FLWR_LOCAL_SUPERLINK_HTTP_API_PORT and
# FLWR_LOCAL_CONTROL_API_PORT name other ports: then this checkout gets a SuperLink of its own.
run: setup
	@$(BIN)/python -m simulations.config "out-dir='$(OUT)' $(RUN_CONFIG)"
	@mkdir -p "$(OUT)"
	$(BIN)/flwr run . --stream --run-config "out-dir='$(OUT)' $(RUN_CONFIG)" --federation-config "num-supernodes=10" 2>&1 | tee "$(OUT)/last-run.log"
	@! grep -qE "bad run config|cannot run|(ServerApp|Simulation) raised an exception" "$(OUT)/last-run.log" || \
		{ echo "make run: the run failed (log: $(OUT)/last-run.log)" >&2; exit 1; }

# Two workers (pytest-xdist): tests that start a Ray head of their own share one worker
# (xdist_group "own-ray"); TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

sweep: setup
	$(BIN)/python -m simulations.sweep $(SWEEP)
