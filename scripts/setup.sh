#!/usr/bin/env bash
# One install step for both README commands: system packages (as root), a virtual
# environment in .venv, and xreport with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fonts-noto-cjk libharfbuzz-subset0 poppler-utils libgl1 libglib2.0-0 chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: WARNING: not root, so these Debian packages were not installed: ${missing[*]}" >&2
    echo "setup: WARNING: PDFs may lack the CJK font or render slowly; PDF tests will skip." >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# Pinned: these two install from this machine's disk; other versions download gigabytes.
if ! .venv/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  echo "setup: installing torch 2.14.1 / torchvision 0.29.1 (from local disk, a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
stamp=.venv/.xreport-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing xreport[test]"
  .venv/bin/python -m pip install -q -e '.[test,dicom]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/xreport)"
