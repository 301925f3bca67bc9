#!/usr/bin/env bash
# The npm class's tests need node and npm, Yarn 4 (the .yarnrc.yml client) and Verdaccio (a
# real npm registry). Debian's nodejs and npm come from apt when missing; Verdaccio and Yarn
# are installed, pinned, with npm into ~/.cache/connectors-csi/tools/verdaccio, node-fetch
# overridden to 2.7.0 (the version Verdaccio 6.8.0's tree installs cleanly with). Prints
# nothing when all is in place.
set -euo pipefail

VERDACCIO_VERSION=6.8.0
YARN_VERSION=4.18.1
dir="${CONNECTORS_TOOLS_DIR:-$HOME/.cache/connectors-csi/tools}/verdaccio"

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# has <package> <version>: the package is installed at that version.
has() {
  node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
    "$dir/node_modules/$1/package.json" "$2" 2>/dev/null
}
installed() { has verdaccio "$VERDACCIO_VERSION" && has @yarnpkg/cli-dist "$YARN_VERSION"; }
installed && exit 0

mkdir -p "$dir"
cat >"$dir/package.json" <<JSON
{
  "name": "connectors-csi-verdaccio",
  "private": true,
  "dependencies": { "verdaccio": "$VERDACCIO_VERSION", "@yarnpkg/cli-dist": "$YARN_VERSION" },
  "overrides": { "node-fetch": "2.7.0" }
}
JSON
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
installed || { echo "hack/tools/npm.sh: verdaccio $VERDACCIO_VERSION or yarn $YARN_VERSION did not install in $dir" >&2; exit 1; }
