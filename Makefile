# Set-up and the two entry points: `make demo` and `make test`.
# TORCH pins the CPU wheel this project's machines carry; elsewhere override it, e.g.
# `make test TORCH=torch`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.sfc-relp-installed
SHARED ?= ../shared
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps dictionary-learning==0.1.0
	@command -v dot >/dev/null 2>&1 || sh scripts/install-graphviz.sh || \
		echo "note: graphviz 'dot' not installed; diagrams will be written as .dot only"
	@sh scripts/install-chromium.sh || \
		echo "note: chromium not installed; browser tests skip and the demo takes no screenshot"
	touch $(STAMP)

# The main job on the bundled model: a RelP circuit for rc (nodes and edges), its diagram,
# its evaluation on the held-out split, a faithfulness sweep comparing relp, ig and atp, and
# the seed paper's Figure 2 for it (AtP and RelP against activation patching on IOI, with the
# raw effects in circuits/fidelity/tiny-pythia_ioi_fidelity.npz), and the circuit's offline page
# (feature contexts from rc's train split), with a screenshot.
demo: $(STAMP)
	$(BIN)/sfc-relp circuit --dataset rc --method relp --node-threshold 0.3 --edge-threshold 0.05 \
		--out circuits
	$(BIN)/sfc-relp evaluate --circuit circuits/tiny-pythia_rc_relp.json
	$(BIN)/sfc-relp sweep --dataset rc --methods relp,ig,atp --out circuits
	$(BIN)/sfc-relp fidelity --task ioi --n-prompts 30 --node-prompts 0 --methods atp,relp \
		--out circuits/fidelity
	$(BIN)/sfc-relp features --circuit circuits/tiny-pythia_rc_relp.json --corpus rc --max-docs 256 \
		--out circuits/features
	$(BIN)/sfc-relp view --circuit circuits/tiny-pythia_rc_relp.json --features circuits/features \
		--out circuits/tiny-pythia_rc_relp.html
	$(BIN)/sfc-relp export --circuit circuits/tiny-pythia_rc_relp.json --format neuronpedia
	-$(BIN)/python -m sfc_relp.browser circuits/tiny-pythia_rc_relp.html docs/circuit_page.png

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data build *.egg-info
