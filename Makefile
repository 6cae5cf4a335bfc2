# Two commands do everything on a fresh machine: `make report` and `make test`.
# Each installs what it needs first (Python venv, TeX for the PDF, the offline data).

ROOT      := $(realpath $(dir $(lastword $(MAKEFILE_LIST))))
ifneq ($(ROOT),$(realpath $(CURDIR)))
$(error Run make in the repository folder: make -C $(ROOT) $(MAKECMDGOALS))
endif

PYTHON    ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
MIRROR    := data/emoji_mirror.parquet
RUN_DIR   ?= .
PARAMS    ?=
OUT_NB    := $(RUN_DIR)/homework2.ipynb
TEX_PKGS  := texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc

.PHONY: setup system data report pdf test bench submission clean distclean

setup: $(STAMP) system

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# System packages: TeX and pandoc for the PDF, npm for the offline mirror, poppler-utils
# (pdftotext) for the test that reads the PDF, procps (ps, pgrep) for the tests that stop runs.
system:
	@missing=""; \
	command -v xelatex >/dev/null || missing="$(TEX_PKGS)"; \
	command -v pandoc >/dev/null || missing="$$missing pandoc"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	command -v pgrep >/dev/null || missing="$$missing procps"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "NOTE: install these system packages for the PDF and the mirror: $$missing"; \
		echo "      (Debian/Ubuntu: sudo apt-get install $$missing). Carrying on without them."; \
	fi

data: $(MIRROR)

$(MIRROR): | $(STAMP) system
	$(PY) project.py mirror

# The main job: re-execute the notebook end to end, then render the PDF. project.py checks
# RUN_DIR and PARAMS (only -p NAME VALUE of the notebook's parameters) before anything
# starts, and stops papermill, its kernel and the training processes when make is stopped.
# The notebook moves its outputs into RUN_DIR only at its very end, and the executed notebook
# replaces $(OUT_NB) only when papermill succeeded.
# Another output folder: make report RUN_DIR=runs/mine PARAMS="-p latent_dim 64".
report: setup data
	$(PY) project.py run "$(RUN_DIR)" $$PPID $(PARAMS)
	$(MAKE) --no-print-directory pdf RUN_DIR="$(RUN_DIR)"

# The PDF hides setup cells and the code of formatting cells (cell tags), written aside and
# moved into place, so a failed conversion leaves the previous PDF. Then the answers check:
# every number in a markdown answer must be one the run produced (it fails only for the
# committed run; other runs print their mismatches).
pdf:
	@if [ ! -f "$(OUT_NB)" ]; then \
		echo "make pdf: $(OUT_NB) does not exist; run make report RUN_DIR=$(RUN_DIR) first."; \
		exit 2; fi
	@trap 'echo "make pdf was stopped: $(RUN_DIR)/report/homework2.pdf is still the previous PDF; run make pdf RUN_DIR=$(RUN_DIR)"; exit 130' INT TERM HUP; \
	if command -v xelatex >/dev/null && command -v pandoc >/dev/null; then \
		rm -rf "$(RUN_DIR)/report/.pdf-tmp" && \
		$(PY) -m jupyter nbconvert --to pdf "$(OUT_NB)" --output-dir "$(RUN_DIR)/report/.pdf-tmp" \
			--output homework2 --template-file "$(CURDIR)/report/homework2.tex.j2" \
			--no-prompt --TagRemovePreprocessor.enabled=True \
			--TagRemovePreprocessor.remove_input_tags='["remove-input"]' \
			--TagRemovePreprocessor.remove_cell_tags='["remove-cell", "injected-parameters"]' \
			--log-level WARN && \
		mv "$(RUN_DIR)/report/.pdf-tmp/homework2.pdf" "$(RUN_DIR)/report/homework2.pdf" && \
		rm -rf "$(RUN_DIR)/report/.pdf-tmp"; \
	else echo "xelatex or pandoc missing: no PDF (see 'make system')."; fi
	$(PY) runs.py check-answers "$(RUN_DIR)"

test: setup data
	$(PY) -m pytest tests -q

bench: setup data
	$(PY) bench.py

submission: setup data
	$(PY) project.py submission

# Only what a rebuild recreates; never a run's outputs (runs/, weights/, latents/, report/).
clean:
	@echo "make clean: removing Python caches and unfinished PDF builds (the venv stays: make distclean)"
	rm -rf .pytest_cache __pycache__ tests/__pycache__ report/.pdf-tmp runs/*/report/.pdf-tmp

distclean: clean
	@echo "make distclean: also removing the virtual environment $(VENV)"
	rm -rf $(VENV)
