#!/usr/bin/env bash
# Installs the peers the comparison benchmarks run against: nginx with the
# Nchan module, and Pushpin. Idempotent: installs only what is missing. Needs
# root (or sudo) and apt; Debian/Ubuntu only. Not run by CI.
#
# The packages' own services are stopped and disabled after installing: the
# benchmark scripts start private instances with their own config in a
# temporary directory, on free loopback ports, as the current user.
set -euo pipefail

packages=(nginx libnginx-mod-nchan pushpin)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "peers already installed: ${packages[*]}" >&2
else
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-peers.sh needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "installing: ${missing[*]}" >&2
  # Do not let the packages start their services (no init system in
  # containers, and the default ports may be taken): policy-rc.d 101 = deny.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    created_policy=1
  fi
  cleanup() { if [[ $created_policy == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
  trap cleanup EXIT
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Stop instances the packages may have started anyway (systemd hosts).
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  for unit in nginx pushpin; do
    systemctl is-active --quiet "$unit" 2>/dev/null && { sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo); "${sudo_cmd[@]}" systemctl disable --now "$unit" >&2 || true; }
  done
fi

nginx -V 2>&1 | head -n 1 >&2
ls /usr/lib/nginx/modules/ngx_nchan_module.so >&2
pushpin --version 2>&1 | head -n 1 >&2 || true
