#!/usr/bin/env bash
# Make sure "$1" is Python >= 3.11 with a working venv module (Debian ships it separately).
set -euo pipefail
py="${1:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: $py not found. Hint: apt-get install python3 (3.11 or newer), or make PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $py is $("$py" -V 2>&1); kubeedge-mapper needs Python 3.11 or newer. Hint: make PYTHON=python3.11" >&2
  exit 1
fi
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  bash "$(dirname "$0")/ensure-apt.sh" "python${ver}-venv"
fi
