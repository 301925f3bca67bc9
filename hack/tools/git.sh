#!/usr/bin/env bash
# git with its http-backend (Debian's git): the real client of the github and gitlab classes'
# tests and the real server they clone from (test/gitserver). Prints nothing when present.
set -euo pipefail
command -v git >/dev/null && [ -x /usr/lib/git-core/git-http-backend ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "hack/tools/git.sh: need root to apt-get install git" >&2; exit 1; fi
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >&2
