#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, then runs every test.
# Usage: bash tests/run.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: Python with venv (the tools' virtualenv below; Debian ships
# ensurepip, which venv needs for pip, in python3-venv) and what the end-to-end tests drive
# (headless Chromium for the subscribe page).
need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# libseccomp for tests/tools/deny_syscalls.py (a real seccomp filter around the binary). Not
# `grep -q`: it exits at the first match, and ldconfig, still writing, dies of SIGPIPE, which
# pipefail turns into a failed test that the library is there.
ldconfig -p | grep 'libseccomp\.so\.2' >/dev/null || need+=(libseccomp2)
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

# The tools' virtualenv. Its pip is the test that it was made whole: a creation that failed
# half-way (no ensurepip) leaves bin/python3 without pip, and is made again from scratch.
venv=target/test-venv
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv --clear "$venv"
fi
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

export CONVENOR_TEST_PYTHON="$PWD/$venv/bin/python3"
cargo test --all-targets "$@"
