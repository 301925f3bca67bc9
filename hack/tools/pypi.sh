#!/usr/bin/env bash
# The pypi class's test needs Debian's nginx (the PEP 503 index it serves over a directory of
# wheels), Debian's python3 with pip, setuptools and wheel (builds the test's wheels, runs
# `pip install` / `pip download`) and twine (`twine upload`). Installed from apt when missing;
# prints nothing when all is in place. The test runs /usr/bin/python3 (Debian's), never a
# python3 that PATH may find first (pyenv), so that the packages below are the ones it uses.
set -euo pipefail

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
/usr/bin/python3 -c 'import setuptools' >/dev/null 2>&1 || missing+=(python3-setuptools)
/usr/bin/python3 -c 'import wheel' >/dev/null 2>&1 || missing+=(python3-wheel)
[ -x /usr/bin/twine ] || missing+=(twine)
[ ${#missing[@]} -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
