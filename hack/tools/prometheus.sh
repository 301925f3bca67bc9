#!/usr/bin/env bash
# Debian's prometheus (the server and promtool) for TestMonitoringRules
# (test/e2e/monitoring_test.go), which runs it against the driver on loopback. The package's own
# service is kept from starting (a policy-rc.d for the install): the test runs its own server.
# Installs only what is missing; prints nothing when it is there.
set -euo pipefail
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then echo "hack/tools/prometheus.sh: need root to apt-get install prometheus" >&2; exit 1; fi
echo "hack/tools/prometheus.sh: installing prometheus" >&2
policy=/usr/sbin/policy-rc.d
had_policy=false
[ -e "$policy" ] && had_policy=true
if ! $had_policy; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; fi
trap '$had_policy || rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends prometheus >&2
