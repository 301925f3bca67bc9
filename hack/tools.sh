#!/usr/bin/env bash
# Installs the real tool clients and servers the tests drive (Debian packages, npm packages),
# once: each hack/tools/<tool>.sh checks what it needs and installs only what is missing, so a
# second run costs nothing. `make test` and `make e2e` call this; tests fail, naming this
# script, when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in hack/tools/*.sh; do
  [ -e "$script" ] || continue
  bash "$script"
done
