#!/usr/bin/env bash
# Debian packages the project needs beyond Python: MapServer 8 and lighttpd for the
# demo WMS, GDAL for building its data and for the real-client tests, DejaVu fonts
# for its labels. Idempotent and quiet when everything is there. As root on
# Debian/Ubuntu it installs what is missing; otherwise it says what to install.
set -euo pipefail

packages=(cgi-mapserver mapserver-bin lighttpd gdal-bin fonts-dejavu-core)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing Debian packages (the demo WMS and integration tests need them):" \
       "sudo apt-get install ${missing[*]}"
fi
