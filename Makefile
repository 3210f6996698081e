# humanserve. Newcomers: `make serve` to try it, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Models to export and serve; empty means the defaults (served_by_default in export/<family>.py).
MODELS ?=
MODEL_ARGS := $(if $(strip $(MODELS)),--models $(MODELS))

.PHONY: setup stubs check-java browser export export-gpu gpu-check serve start stop test lint format loadtest bench bench-zoo soak clean

# The protobuf message modules (*_pb2.py), generated from the .proto files by the pinned grpcio-tools and never
# edited, are committed so that `pip install .` needs nothing at build time. Generating them there would put
# grpcio-tools and the google/rpc protos in every install's build environment (measured: 15 s and 47 MB more per
# install, from a local package mirror on 2 cores), and the modules would then demand a protobuf as new as whatever
# grpcio-tools that build happened to get. The gRPC service stubs are not generated: humanserve_client/protocol/stub.py
# makes each from its service's descriptor in those modules. `make stubs` after editing a .proto or the grpcio-tools
# pin; tests/test_client_install.py fails while the committed modules differ from a fresh generation.
PROTOS := $(wildcard humanserve_client/protocol/*.proto handlers/core/*.proto)
MESSAGE_MODULES := $(PROTOS:.proto=_pb2.py)

# The frontend agent that lets TorchServe 0.12 restart a dead worker of a sequence model, answer every
# request of a gRPC stream the client closed first, decode a worker's large answers once, take a REST
# sequence from X-Sequence-Id or ts_request_sequence_id in any case, and keep idle sequences from holding
# up others (runtime/frontend_agent/); runtime/torchserve.py loads it wherever it was built.
AGENT_JAR := build/humanserve-agent.jar

setup: $(VENV)/.installed $(MESSAGE_MODULES) $(AGENT_JAR) browser

# The playground's browser tests (tests/test_playground.py) drive Debian's chromium through Playwright; as root
# with apt-get it is installed here (about 20 s), elsewhere the tests skip and say so.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y --no-install-recommends chromium >/dev/null \
	    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; \
	  else \
	    echo "WARNING: no chromium on the PATH: the playground's browser tests will skip ('sudo apt-get install chromium')"; \
	  fi; }

$(VENV)/.installed: requirements.txt constraints.txt requirements-reference.txt pyproject.toml | check-java
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps -r requirements-reference.txt
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps -e .
	touch $@

PROTOC = $(PY) -m grpc_tools.protoc -I . -I "$$($(PY) -c 'import google.rpc, pathlib; print(pathlib.Path(google.rpc.__path__[0]).parents[1])')" \
  --python_out=.

stubs: $(VENV)/.installed
	$(PROTOC) $(PROTOS)

# The venv is order-only: a new venv does not rewrite a clone's committed modules; an edited .proto does.
humanserve_client/protocol/%_pb2.py: humanserve_client/protocol/%.proto | $(VENV)/.installed
	$(PROTOC) $<

handlers/core/%_pb2.py: handlers/core/%.proto | $(VENV)/.installed
	$(PROTOC) $<

$(AGENT_JAR): runtime/frontend_agent/build.sh runtime/frontend_agent/MANIFEST.MF $(shell find runtime/frontend_agent -name '*.java')
	@if command -v javac >/dev/null && command -v jar >/dev/null; then \
	  sh runtime/frontend_agent/build.sh $@ ; \
	else \
	  echo "WARNING: no JDK (javac, jar) on the PATH: $@ is not built, and TorchServe 0.12 will not restart a dead"; \
	  echo "worker of a sequence model (pose_tracker), and its frontend pays far more for answers of megabytes."; \
	  echo "Install one, e.g. 'sudo apt-get install -y openjdk-17-jdk-headless'."; \
	fi

check-java:
	@command -v java >/dev/null || { \
	  echo "TorchServe needs Java 11 or newer, and no 'java' is on the PATH."; \
	  echo "Install one, e.g. 'sudo apt-get install -y openjdk-17-jre-headless' (Debian/Ubuntu)"; \
	  echo "or 'brew install openjdk@17' (macOS), then run make again."; exit 1; }
	@major=$$(java -version 2>&1 | awk -F'"' '/version/ {print $$2; exit}' | awk -F. '{print ($$1 == 1) ? $$2 : $$1}'); \
	if [ -z "$$major" ] || [ "$$major" -lt 11 ]; then \
	  echo "TorchServe needs Java 11 or newer; 'java -version' reports $${major:-an unknown version}."; \
	  echo "Install e.g. 'sudo apt-get install -y openjdk-17-jre-headless' and put it first on the PATH."; exit 1; fi

# Re-export every chosen model (EXPORT_ARGS, e.g. --checkpoint PATH or --batch-size 16).
export: setup
	$(PY) -m export $(MODELS) $(EXPORT_ARGS)

# Archives for GPU nodes (k8s/overlays/gpu), in model_store/gpu/: one worker on the pod's GPU and
# larger batches. The archive decides these; TorchServe 0.12 lets it win over config.properties.
GPU_SERVING := --batch-size 32 --max-batch-delay 10 --workers 1 --device cuda
export-gpu: setup
	$(PY) -m export $(MODELS) --store model_store/gpu $(GPU_SERVING) $(EXPORT_ARGS)

# One prepared check for a GPU machine, inside 8 minutes: the GPU-only tests, pose's CUDA archive served and measured,
# the rows in loadtest/results/ (loadtest/gpu_check.py). Without a CUDA device it says so and exits 0.
gpu-check: setup
	$(PY) -m loadtest.gpu_check $(GPU_SERVING)

# Export what is missing or stale, serve in the foreground, send a first request. Ctrl-C stops.
serve: setup
	$(PY) -m export $(MODELS) --if-stale
	$(PY) -m runtime.torchserve serve $(MODEL_ARGS)

# The same server in the background; returns once the models answer.
start: setup
	$(PY) -m export $(MODELS) --if-stale
	$(PY) -m runtime.torchserve start $(MODEL_ARGS)

stop: setup
	$(PY) -m runtime.torchserve stop

test: setup
	$(PY) -m pytest

# The formatter and linter over the whole repository (pyproject.toml [tool.ruff]); `make format` applies them.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Load: Locust headless against the running server (or one started for MODEL), with a one-line summary
# and the HTML/CSV report in loadtest/results/. USERS: requests in flight (bench: 2 x batch x workers).
MODEL ?= pose_resnet50
USERS ?=
DURATION ?= 60s
PROTOCOL ?= rest
loadtest: setup
	$(PY) -m loadtest.run --model $(MODEL) --protocol $(PROTOCOL) --duration $(DURATION) $(if $(USERS),--users $(USERS))

# Served vs raw for MODEL, one row in docs/benchmarks.md (BENCH_ARGS: --batch-size --max-batch-delay --workers --threads --netty-threads).
# DURATION defaults to 6 full batches (at least 30 s) here.
bench: setup
	$(PY) -m loadtest.bench_served --model $(MODEL) --protocol $(PROTOCOL) $(if $(filter command line,$(origin DURATION)),--duration $(DURATION)) $(if $(USERS),--users $(USERS)) $(BENCH_ARGS)

# Served vs raw for every model of the zoo over REST and gRPC: a row each (80 minutes on 2 CPU cores).
bench-zoo: setup
	failed=""; for model in $$($(PY) -c 'from export.registry import RECIPES; print(*RECIPES)'); do \
	  for protocol in rest grpc; do \
	    $(PY) -m loadtest.bench_served --model $$model --protocol $$protocol || failed="$$failed $$model/$$protocol"; \
	  done; \
	done; [ -z "$$failed" ] || { echo "failed:$$failed"; exit 1; }

# One benchmark each, `make bench-NAME BENCH_ARGS="..."` runs `python -m loadtest.bench_NAME` (its --help says more):
#   decode     image decoders on the load-test photos
#   stack      the serving stack's CPU per request around near-free stand-in models, every handler family and photo
#              size (--rows --images --window --clients --allocator --set KEY=VALUE; about 15 minutes on 2 cores)
#   answers    what answers of 1 KB to 8 MB cost TorchServe's frontend, as shipped and with the agent
#              (--sizes --clients --window)
#   pipeline   detect-then-pose as one handler vs as a TorchServe workflow, same models and load
#              (--duration --clients --detector)
#   batching   pad photos of mixed sizes into one call, or one call per size (segmenter, style)
#   latency    per-image latency of served models, one client (MODELS... --size --requests --options)
#   tracking   MOTA/IDF1 on synthetic videos, frames/s per concurrent sequences, and with sequences left open
#              (--sequences --duration --abandoned N... --soak MINUTES)
#   pairing    pose pairing of two synthetic 50,000-patch sets (humanserve pair), and --unique on smaller ones
#              (--patches --views --top --unique-patches)
#   generator  the load generator's own CPU per request, threads against asyncio (--clients --window --rounds)
#   encoders   exact PNG/WebP encoders for transparent cut-outs, ms and bytes at 640x480 and 1920x1080, issue 37
#              (--sizes --pictures --repeats --min-seconds --rounds --only; about 10 minutes on 2 cores)
#   reads      what TorchServe's worker spends reading a request from the frontend, and other readers of it
#              (--messages --rounds; under a minute)
BENCHMARKS := decode stack answers pipeline batching latency tracking pairing generator encoders reads
.PHONY: $(addprefix bench-,$(BENCHMARKS))
$(addprefix bench-,$(BENCHMARKS)): bench-%: setup
	$(PY) -m loadtest.bench_$* $(BENCH_ARGS)

# Mixed models (pose, pipeline, segmenter, style) under REST and gRPC load for DURATION (default 30m), a worker
# killed once: failures, recovery, RSS slopes, p50/p99 per minute, log bytes; a row in docs/benchmarks.md
# (BENCH_ARGS: --models --users --singles --kill-at --env NAME=VALUE; --no-record to leave the docs alone).
soak: setup
	$(PY) -m loadtest.soak --duration $(if $(filter command line,$(origin DURATION)),$(DURATION),30m) $(BENCH_ARGS)

clean:
	rm -rf run build model_store/*.mar model_store/gpu .pytest_cache
