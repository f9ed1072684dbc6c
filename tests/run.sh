#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, then runs every test.
# Usage: bash tests/run.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-venv
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# Debian packages the end-to-end tests drive (headless Chromium for the subscribe page).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# libseccomp for tests/tools/deny_syscalls.py (a real seccomp filter around the binary).
ldconfig -p | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)
# readelf, to check the build-id convenor reads from its own image.
command -v readelf >/dev/null 2>&1 || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "tests/run.sh: please install: ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

export CONVENOR_TEST_PYTHON="$PWD/$venv/bin/python3"
cargo test --all-targets "$@"
