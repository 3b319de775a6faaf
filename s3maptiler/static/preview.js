// s3maptiler preview: one layer drawn from the service's tiles with OpenLayers (global `ol`).
//
// Tiles are fetched with fetch() rather than by an <img>, so the X-Tile-Source header
// of every answer (cache, render, inflight, blank) can be counted and drawn as an
// outline around the tile. `cache: 'no-store'` keeps the browser's own cache out of
// the way: each count is what the service answered just now.
//
// The bucket's address (when the service knows the bucket's public URL) is the
// production path: a tile the bucket has is its own answer, counted as "bucket"; a
// missing one is S3's 307 to the service (response.redirected), counted by what the
// service said. A bucket that does not answer at all, or answers a miss without
// redirecting, is said in one line over the map.
//
// State for people and for the browser test lives on <html>:
//   data-map-state      loading | idle: idle once every tile asked for since the last
//                       switch is drawn or failed (OpenLayers' own loadstart/loadend
//                       miss a switch of URLs, so the page keeps count itself);
//                       unreachable: the bucket did not answer
//   data-tiles-redirected  tiles the bucket sent to the service since the last switch
//   data-tiles-loaded   tiles drawn since the last layout switch
//   data-tiles-failed   tiles that did not load since the last layout switch
(function () {
  'use strict';

  const config = JSON.parse(document.getElementById('preview-config').textContent);
  const html = document.documentElement;
  // ol/TileState values; the full build does not export TileState.
  const TILE_LOADING = 1;
  const TILE_ERROR = 3;
  const COLOURS = {
    bucket: '#6a1b9a',
    cache: '#2e7d32',
    render: '#e65100',
    inflight: '#1565c0',
    blank: '#616161',
    archive: '#00838f', // a zoom answered from the layer's PMTiles archive
    error: '#c62828',
  };

  // --- tile addresses ------------------------------------------------------------
  // (z, x, y) with y counted from the top, as in s3maptiler.tiles.grids and OpenLayers.
  // Each returns the path after the address's base, or null when the layout cannot
  // write that tile (quadkey has no zoom 0).
  function hex8(n) {
    return n.toString(16).padStart(8, '0');
  }

  function quadkey(z, x, y) {
    if (z === 0 || x >= 2 ** z || y >= 2 ** z) return null;
    let key = '';
    for (let i = z; i > 0; i -= 1) {
      const bit = 2 ** (i - 1);
      key += String((Math.floor(x / bit) % 2) + 2 * (Math.floor(y / bit) % 2));
    }
    return key;
  }

  const LAYOUTS = {
    tms: (z, x, y) => `${z}/${x}/${config.sizes[z][1] - 1 - y}`,
    xyz: (z, x, y) => `${z}/${x}/${y}`,
    wmts: (z, x, y) => `${z}/${y}/${x}`,
    arcgis: (z, x, y) => `L${String(z).padStart(2, '0')}/R${hex8(y)}/C${hex8(x)}`,
    quadkey: quadkey,
  };

  function tileUrl(address, z, x, y) {
    const path = LAYOUTS[address.layout](z, x, y);
    if (path === null) return undefined;
    // suffix: "@2x" before the extension of a high-DPI layer's keys.
    return address.base + path + (address.suffix || '') + (address.ext ? `.${address.ext}` : '');
  }

  const addresses = Object.fromEntries(config.addresses.map((a) => [a.id, a]));
  const params = new URLSearchParams(window.location.search);
  let address = addresses[params.get('layout')] || config.addresses[0];

  // --- grid, source, layers --------------------------------------------------------
  const projection = ol.proj.get(config.projection);
  const tileGrid = new ol.tilegrid.TileGrid({
    extent: config.extent,
    origins: config.origins,
    resolutions: config.resolutions,
    sizes: config.sizes,
    tileSize: config.tileSize,
  });

  function insideGrid(z, x, y) {
    const size = config.sizes[z];
    return size !== undefined && x >= 0 && y >= 0 && x < size[0] && y < size[1];
  }

  const outlines = new ol.source.Vector({ wrapX: false }); // one outline per tile, no world copies
  const counts = {};
  let generation = 0; // bumped by a switch, so late answers of the old layout are not counted
  let loaded = 0;
  let failed = 0;
  let asked = 0; // tiles asked for since the last switch
  let redirected = 0; // tiles the bucket redirected to the service since the last switch
  const inFlight = new Set(); // tiles being fetched or decoded
  const askedIn = new WeakMap(); // tile -> the generation that asked for it
  let idleCheck = 0;

  function resetCounts() {
    for (const name of Object.keys(COLOURS)) counts[name] = 0;
    loaded = 0;
    failed = 0;
    asked = 0;
    redirected = 0;
    outlines.clear();
    showProblem(null);
    showCounts();
  }

  // One line over the map when the bucket cannot give this page its tiles.
  const problem = document.getElementById('bucket-problem');
  function showProblem(text) {
    problem.hidden = text === null;
    problem.textContent = text || '';
    if (text !== null) html.dataset.mapState = 'unreachable';
  }

  // An https page may not fetch from a plain-http bucket (mixed content): say why.
  function checkMixedContent() {
    if (address.external && window.location.protocol === 'https:' &&
        address.base.startsWith('http:')) {
      showProblem(
        `The bucket's URL ${config.bucketUrl} is plain http and this page is https, so ` +
          'the browser blocks it: give PUBLIC_URL an https URL (e.g. CloudFront).',
      );
    }
  }

  function showCounts() {
    for (const [name, value] of Object.entries(counts)) {
      const element = document.querySelector(`[data-count="${name}"]`);
      if (element) element.textContent = String(value);
    }
    html.dataset.tilesLoaded = String(loaded);
    html.dataset.tilesFailed = String(failed);
    html.dataset.tilesRedirected = String(redirected);
    const via = document.querySelector('[data-count-redirected]');
    if (via) via.textContent = String(redirected);
  }

  function record(tileCoord, source, status, gen, viaRedirect) {
    if (gen !== generation) return;
    const name = source in COLOURS ? source : 'error';
    counts[name] += 1;
    if (viaRedirect) redirected += 1;
    const [z, x, y] = tileCoord;
    const feature = new ol.Feature({
      geometry: ol.geom.Polygon.fromExtent(tileGrid.getTileCoordExtent(tileCoord)),
      z: z,
      source: name,
      label:
        (viaRedirect ? '307 → ' : '') +
        `${name} ${z}/${x}/${y}` +
        (name === 'error' ? ` (${status})` : ''),
    });
    feature.setId(`${z}/${x}/${y}`);
    const old = outlines.getFeatureById(feature.getId());
    if (old) outlines.removeFeature(old);
    outlines.addFeature(feature);
    showCounts();
  }

  // Idle when no tile is in flight two frames on: OpenLayers starts queued tiles after
  // each frame, so a gap between two batches does not count. A tile OpenLayers gave
  // up on (no longer LOADING) is no longer waited for.
  function checkIdle() {
    cancelAnimationFrame(idleCheck);
    idleCheck = requestAnimationFrame(() => {
      idleCheck = requestAnimationFrame(() => {
        for (const tile of inFlight) {
          if (tile.getState() !== TILE_LOADING) inFlight.delete(tile);
        }
        if (inFlight.size === 0 && asked > 0 && problem.hidden) html.dataset.mapState = 'idle';
      });
    });
  }

  function loadTile(tile, src) {
    const gen = generation;
    asked += 1;
    inFlight.add(tile);
    askedIn.set(tile, gen);
    if (problem.hidden) html.dataset.mapState = 'loading'; // else it stays 'unreachable'
    const coord = tile.getTileCoord();
    const external = address.external;
    fetch(src, { cache: 'no-store' })
      .then((response) => {
        // From the bucket: its own answer, or (redirected) the service's after S3's 307.
        const viaRedirect = external && response.redirected;
        if (!response.ok) {
          record(coord, 'error', response.status, gen, viaRedirect);
          tile.setState(TILE_ERROR);
          if (external && !viaRedirect && gen === generation) {
            showProblem(
              `The bucket answered ${response.status} for ${src} without redirecting to ` +
                'the service: its routing rules are missing (s3maptiler bucket setup).',
            );
          }
          return null;
        }
        let source = response.headers.get('X-Tile-Source') || 'unknown';
        if (external && !viaRedirect) source = 'bucket';
        return response.blob().then((blob) => {
          record(coord, source, response.status, gen, viaRedirect);
          const image = tile.getImage();
          const url = URL.createObjectURL(blob);
          const revoke = () => URL.revokeObjectURL(url);
          image.addEventListener('load', revoke, { once: true });
          image.addEventListener('error', revoke, { once: true });
          image.src = url;
        });
      })
      .catch(() => {
        record(coord, 'error', 'network', gen);
        tile.setState(TILE_ERROR);
        if (external && gen === generation && problem.hidden) {
          showProblem(
            `The bucket at ${config.bucketUrl} does not answer this page (not running, ` +
              'not reachable, or no CORS for it): pick another address in the panel.',
          );
        }
      });
  }

  const tiles = new ol.source.TileImage({
    projection: projection,
    tileGrid: tileGrid,
    tileUrlFunction: (coord) => tileUrl(address, coord[0], coord[1], coord[2]),
    tileLoadFunction: loadTile,
    tilePixelRatio: config.tilePixelRatio || 1, // 2: 512 px tiles drawn on 256 CSS px
    transition: 0,
    wrapX: false,
  });
  function tileDone(event, ok) {
    inFlight.delete(event.tile);
    if (askedIn.get(event.tile) === generation) {
      if (ok) loaded += 1;
      else failed += 1;
      showCounts();
    }
    checkIdle();
  }
  tiles.on('tileloadend', (event) => tileDone(event, true));
  tiles.on('tileloaderror', (event) => tileDone(event, false));

  let dataExtent;
  if (config.dataExtent) {
    dataExtent = ol.proj.transformExtent(config.dataExtent, 'EPSG:4326', projection);
  }

  function outlineStyle(feature, resolution) {
    // Only the zoom level on screen: OpenLayers keeps other levels' tiles for a while.
    if (feature.get('z') !== tileGrid.getZForResolution(resolution)) return null;
    const colour = COLOURS[feature.get('source')];
    return new ol.style.Style({
      stroke: new ol.style.Stroke({ color: colour, width: 2 }),
      text: new ol.style.Text({
        text: feature.get('label'),
        font: '12px "DejaVu Sans", sans-serif',
        fill: new ol.style.Fill({ color: colour }),
        stroke: new ol.style.Stroke({ color: 'rgba(255, 255, 255, 0.9)', width: 3 }),
      }),
    });
  }

  const outlineLayer = new ol.layer.Vector({ source: outlines, style: outlineStyle });

  const view = new ol.View({
    projection: projection,
    resolutions: config.resolutions,
    minZoom: config.minZoom,
    maxZoom: config.maxZoom,
    constrainResolution: true,
    extent: config.extent,
    constrainOnlyCenter: true,
  });

  const map = new ol.Map({
    target: 'map',
    layers: [new ol.layer.Tile({ source: tiles, extent: dataExtent, preload: 0 }), outlineLayer],
    view: view,
    controls: ol.control.defaults.defaults({ attribution: false }).extend([
      new ol.control.ScaleLine(),
    ]),
  });

  // --- where to look: ?lon=&lat=&z= from a shared link, else the layer's extent -----
  const lon = parseFloat(params.get('lon'));
  const lat = parseFloat(params.get('lat'));
  const zoom = parseInt(params.get('z'), 10);
  if (Number.isFinite(lon) && Number.isFinite(lat)) {
    view.setCenter(ol.proj.fromLonLat([lon, lat], projection));
    view.setZoom(Number.isFinite(zoom) ? zoom : Math.max(config.minZoom, 2));
  } else {
    view.fit(dataExtent || config.extent, { size: map.getSize() });
  }

  map.on('rendercomplete', checkIdle);
  // The address bar always holds a link to what is on screen.
  function updateLink() {
    const center = view.getCenter();
    if (center) {
      const lonlat = ol.proj.toLonLat(center, projection);
      params.set('lon', lonlat[0].toFixed(5));
      params.set('lat', lonlat[1].toFixed(5));
      params.set('z', String(view.getZoom()));
    }
    params.set('layout', address.id);
    window.history.replaceState(null, '', `?${params}`);
  }
  map.on('moveend', updateLink);

  // --- the tile under the mouse ----------------------------------------------------
  const tileAddress = document.getElementById('tile-address');
  const tileUrlText = document.getElementById('tile-url');
  const lonlatText = document.getElementById('lonlat');

  let pointer = null; // the map coordinate last under the mouse

  function showTileAt(coordinate) {
    pointer = coordinate;
    const z = tileGrid.getZForResolution(view.getResolution());
    const [, x, y] = tileGrid.getTileCoordForCoordAndZ(coordinate, z);
    const where = ol.proj.toLonLat(coordinate, projection);
    lonlatText.textContent = `lon ${where[0].toFixed(5)}, lat ${where[1].toFixed(5)}`;
    if (insideGrid(z, x, y)) {
      tileAddress.textContent = `${z}/${x}/${y}`;
      tileUrlText.textContent = tileUrl(address, z, x, y) || 'this layout has no key for this tile';
    } else {
      tileAddress.textContent = 'outside the grid';
      tileUrlText.textContent = '';
    }
  }

  map.on('pointermove', (event) => {
    if (!event.dragging) showTileAt(event.coordinate);
  });

  // --- the layout switch and the outlines ------------------------------------------
  const select = document.getElementById('address');
  const template = document.getElementById('template');

  function useAddress(id) {
    address = addresses[id];
    html.dataset.address = id;
    select.value = id;
    template.textContent = address.template;
    generation += 1;
    resetCounts();
    html.dataset.mapState = 'loading';
    checkMixedContent();
    updateLink();
    if (pointer) showTileAt(pointer); // the same tile, at its address in this layout
    // A new key makes the source drop its tiles and ask again at the new URLs.
    tiles.setTileUrlFunction(
      (coord) => tileUrl(address, coord[0], coord[1], coord[2]),
      `${id}:${generation}`,
    );
  }

  select.addEventListener('change', () => useAddress(select.value));
  document.getElementById('outlines').addEventListener('change', (event) => {
    outlineLayer.setVisible(event.target.checked);
  });

  select.value = address.id;
  template.textContent = address.template;
  resetCounts();
  checkMixedContent();
  html.dataset.address = address.id;
  window.s3maptilerPreview = { map: map, tileGrid: tileGrid, useAddress: useAddress };
})();
