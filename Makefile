# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit soak hunt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/segment-engine run

test: $(STAMP)
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# The soak scenario alone, for 5 minutes, printing lag, RSS and throughput samples (tests/reliability/test_soak.py).
soak: $(STAMP)
	SEGMENT_ENGINE_SOAK_SECONDS=300 $(BIN)/python -m pytest -q -s tests/reliability/test_soak.py

# The hunt for /count above the members after a kill during a backfill: HUNT_RUNS seeded runs (default 20),
# each printing its seed and whether count == members, then a tally (tests/reliability/test_hunt_count.py).
HUNT_RUNS ?= 20
hunt: $(STAMP)
	HUNT_RUNS=$(HUNT_RUNS) $(BIN)/python -m pytest -q -s tests/reliability/test_hunt_count.py

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
