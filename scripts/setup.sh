#!/usr/bin/env bash
# Installs every build and test dependency by package name (Debian), idempotently.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      nlohmann-json3-dev libcli11-dev libpcre2-dev libutf8proc-dev libpng-dev libgtest-dev
      libcairo2-dev fonts-dejavu-core
      clang libclang-rt-14-dev libfuzzer-14-dev libomp-14-dev
      libcpp-httplib-dev chromium python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Python packages of the tests (the unmodified `openai` client and pytest, from PyPI) in a project
# venv made by Debian's python3, so the tests never depend on whichever python is first on PATH.
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if ! "$venv/bin/python" -c "import openai, pytest" 2>/dev/null; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "openai>=1.30,<3" "pytest>=7"
fi
echo "setup: all dependencies present"
