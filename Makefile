# stockledger: every target sets up what it needs (virtualenv, packages, Kafka jars) idempotently.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SL := $(VENV)/bin/stockledger

.PHONY: demo demo-embedded test test-unit kafka-up kafka-down kafka-status kafka-logs registry-logs bench bench-quick lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job on the real broker (Kafka fetched and started, stopped afterwards)
	bash scripts/with-kafka.sh $(SL) demo $(ARGS)

demo-embedded: $(STAMP)  ## the same ledger with no Kafka and no Java
	$(SL) demo --embedded $(ARGS)

test: $(STAMP)  ## the whole suite, unit and integration, against a real Kafka broker and schema registry
	bash scripts/kafka.sh fetch
	bash scripts/registry.sh fetch
	bash scripts/with-kafka.sh bash scripts/run-tests.sh $(ARGS)

test-unit: $(STAMP)
	bash scripts/run-tests.sh tests/unit $(ARGS)

kafka-up: $(STAMP)  ## the broker and the schema registry beside it, left running
	bash scripts/kafka.sh start
	bash scripts/registry.sh start
	@echo "export STOCKLEDGER_REGISTRY_URL=http://127.0.0.1:$${STOCKLEDGER_REGISTRY_PORT:-8081}/apis/ccompat/v6  # so the CLI takes schema ids from it"

kafka-down:
	bash scripts/registry.sh stop
	bash scripts/kafka.sh stop

kafka-status:
	bash scripts/kafka.sh status; bash scripts/registry.sh status

kafka-logs:
	bash scripts/kafka.sh logs

registry-logs:
	bash scripts/registry.sh logs

bench: $(STAMP)  ## all benchmarks on the real broker; results in bench/results.json and BENCHMARKS.md
	bash scripts/kafka.sh fetch
	bash scripts/registry.sh fetch
	bash scripts/with-kafka.sh sh -c '$(VENV)/bin/python -m bench.replay.run $(ARGS) && $(VENV)/bin/python -m bench.log.run $(ARGS) && $(VENV)/bin/python -m bench.streams.run $(ARGS)'
	# The audit bench moves ~200 MB through the broker: a broker with C2 (not the tests' C1-only default), see BENCHMARKS.md
	STOCKLEDGER_KAFKA_JIT=full bash scripts/with-kafka.sh $(VENV)/bin/python -m bench.audit.run $(ARGS)

bench-quick: $(STAMP)  ## the same benchmarks at smoke-test sizes
	$(MAKE) bench ARGS=--quick

lint: $(STAMP)
	$(VENV)/bin/ruff check ledger schemas services streams tests bench examples

clean:
	rm -rf var/demo var/bench
