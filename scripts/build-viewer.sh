#!/usr/bin/env bash
# The preview map's library: install OpenLayers (and protomaps' pmtiles, which reads
# PMTiles archives in the browser) at the versions pinned in viewer/package-lock.json
# (npm ci, into viewer/node_modules/) and copy the built files pages load to
# s3maptiler/static/vendor/<package>/. Both folders are git-ignored; the
# Elastic Beanstalk bundle includes the second. Idempotent: when the vendor folder was
# built from the current lock file it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

lock=viewer/package-lock.json
vendor=s3maptiler/static/vendor
stamp="$vendor/.package-lock.sha256"
files=(ol/dist/ol.js ol/ol.css ol/LICENSE.md pmtiles/dist/pmtiles.js)

want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  up_to_date=1
  for file in "${files[@]}"; do
    [ -f "$vendor/${file%%/*}/$(basename "$file")" ] || up_to_date=0
  done
  [ "$up_to_date" = 1 ] && exit 0
fi

# npm ci wipes node_modules, so skip it when they were installed from this lock file.
installed=viewer/node_modules/.s3maptiler-lock.sha256
if ! { [ -f "$installed" ] && [ "$(cat "$installed")" = "$want" ]; }; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "build-viewer: npm is not installed (Debian: apt-get install npm); the preview map needs it" >&2
    exit 1
  fi
  echo "build-viewer: npm ci --prefix viewer"
  npm ci --prefix viewer --no-audit --no-fund --ignore-scripts --loglevel=error
  echo "$want" >"$installed"
fi

rm -rf "$vendor.tmp"
for file in "${files[@]}"; do
  mkdir -p "$vendor.tmp/${file%%/*}"
  cp "viewer/node_modules/$file" "$vendor.tmp/${file%%/*}/"
done
version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' viewer/node_modules/ol/package.json | head -n 1)
echo "ol $version from viewer/package-lock.json" >"$vendor.tmp/VERSION"
echo "$want" >"$vendor.tmp/.package-lock.sha256"
# Swap in whole, so a running service never sees half a library.
rm -rf "$vendor"
mv "$vendor.tmp" "$vendor"
echo "build-viewer: OpenLayers $version in $vendor/"
