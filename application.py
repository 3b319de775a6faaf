"""Elastic Beanstalk / gunicorn entry point: `application` is the WSGI callable.

`python application.py` runs the service locally. With no WMS_SERVER set it first
starts the bundled demo WMS (MapServer behind lighttpd on 127.0.0.1), so a fresh
checkout serves tiles with no configuration at all. With LOCAL_WEBSITE=true (`make
run-website`) it also starts LocalStack's S3 and makes its bucket a tile cache whose
website endpoint sends misses here: the whole loop of the product on this machine.
"""

import importlib.util
import logging
import os
import signal
import sys

from s3maptiler.config import ConfigError


def _create():
    from s3maptiler.http.app import create_app

    try:
        return create_app()
    except ConfigError as exc:
        # One line naming the setting, then a non-zero exit: no traceback to dig through.
        sys.stderr.write(f"s3maptiler: configuration error: {exc}\n")
        raise SystemExit(2) from None


def _need_devtools(what: str) -> None:
    """The demo WMS and the local website ship with a checkout (devtools/), not the bundle."""
    if importlib.util.find_spec("devtools") is None:
        sys.stderr.write(f"s3maptiler: {what}: devtools/ is not here (run from a checkout)\n")
        raise SystemExit(2)


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper())
    # SIGTERM unwinds like Ctrl-C, so the demo WMS below is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = stack = None
    if os.environ.get("LOCAL_WEBSITE", "").strip().lower() in ("1", "true", "yes", "on"):
        _need_devtools("LOCAL_WEBSITE=true, no local S3")
        from devtools.localwebsite import LocalStackError, start_for_service

        try:
            stack = start_for_service()
        except LocalStackError as exc:
            sys.stderr.write(f"s3maptiler: LOCAL_WEBSITE=true, no local S3: {exc}\n")
            raise SystemExit(2) from None
    if not os.environ.get("WMS_SERVER"):
        _need_devtools("WMS_SERVER unset, no demo WMS")
        from devtools.demowms import DemoWMS, unavailable_reason

        reason = unavailable_reason()
        if reason:
            sys.stderr.write(f"s3maptiler: WMS_SERVER unset, no demo WMS: {reason}\n")
            raise SystemExit(2)
        try:
            demo = DemoWMS().start()
        except BaseException:
            if stack is not None:
                stack.stop()
            raise
        os.environ["WMS_SERVER"] = demo.url
        os.environ.setdefault("MAP_LAYERS", demo.layers)
    try:
        app = _create()
        settings = app.extensions["s3maptiler"].settings
        layer = settings.layers[0]
        if stack is not None:
            from devtools.localwebsite import prepare_bucket

            steps = prepare_bucket(stack, settings)  # each set-up step logs itself
            logging.getLogger("s3maptiler").info("local bucket %s: %s", settings.bucket, steps[-1])
            from s3maptiler.http.preview import tile_addresses

            bucket = tile_addresses(layer, layer.tile_grid, "", settings.bucket_url)[0]
            logging.getLogger("s3maptiler").info(
                "the loop: maps ask the bucket for %s, which sends a miss here with a 307; "
                "see it at http://%s:%d/preview/%s",
                bucket.template,
                settings.host,
                settings.port,
                layer.name,
            )
        logging.getLogger("s3maptiler").info(
            "serving on http://%s:%d/ (try http://%s:%d/%s3/2/5.png), tiles go to %s",
            settings.host,
            settings.port,
            settings.host,
            settings.port,
            layer.prefix,
            settings.store_location,
        )
        app.run(host=settings.host, port=settings.port, threaded=True)
    finally:
        if demo is not None:
            demo.stop()
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    main()
else:
    application = _create()
