#!/usr/bin/env bash
# Debian packages the project needs beyond Python:
#   cgi-mapserver      /usr/bin/mapserv (MapServer 8), the demo WMS, run as FastCGI
#   mapserver-bin      shptree: spatial indexes for the demo shapefiles
#   lighttpd           FastCGI host for mapserv; its statistics page counts WMS calls
#   gdal-bin           ogr2ogr, gdal_translate, gdal_rasterize, gdaldem: demo data
#   fonts-dejavu-core  DejaVu Sans for the demo map's labels (demo/fonts.txt)
#   chromium           headless browser tests of the preview
#   nginx              the load balancer in front of several instances (scale-out tests
#                      and bench), and a logging proxy that counts S3 requests
#
# Idempotent and silent when everything is installed. As root on Debian/Ubuntu it
# installs what is missing (apt-get update only then); otherwise it prints one line
# naming the packages and exits 0, and the tests that need them skip (except under
# CI=true, where they fail).
set -euo pipefail

packages=(cgi-mapserver mapserver-bin lighttpd gdal-bin fonts-dejavu-core chromium nginx)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages for the demo WMS: install them with" \
       "'sudo apt-get install -y --no-install-recommends ${missing[*]}' (Debian/Ubuntu)"
  exit 0
fi

echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Installing lighttpd or nginx would otherwise start Debian's own service on port 80;
# the project only ever runs lighttpd itself, on 127.0.0.1. policy-rc.d exit 101 =
# "action forbidden"; remove it afterwards only if this script created it.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
