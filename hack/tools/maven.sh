#!/usr/bin/env bash
# Maven and its repository server for TestToolMaven (test/e2e/tool_maven_test.go): Debian's
# maven (mvn, java), nginx with its WebDAV module (the repository the test serves behind Basic
# auth), and the deploy and dependency plugins with their dependencies in /usr/share/maven-repo
# (the repository serves them, so that mvn resolves its plugins through the Connector and never
# from the internet; junit4 completes what the Debian plugin POMs name). Installs only what is
# missing; prints nothing when everything is there.
set -euo pipefail
packages=(maven nginx libmaven-deploy-plugin-java libmaven-dependency-plugin-java junit4)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "hack/tools/maven.sh: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
echo "hack/tools/maven.sh: installing ${missing[*]}" >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
