"""``s3maptiler worker``: draw the metatiles of seed messages from an SQS queue."""

from __future__ import annotations

import click

from s3maptiler.cli import console, context, errors
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding import sqs as sqs_jobs
from s3maptiler.seeding.run import RenderCounts
from s3maptiler.seeding.worker import run_worker
from s3maptiler.service.build import wms_client
from s3maptiler.storage.blanks import SharedBlanks


@click.command("worker")
@context.s3_options
@click.option("--queue", required=True, metavar="URL", help="SQS queue of seed messages.")
@click.option("--wait-seconds", default=20, show_default=True, type=click.IntRange(0, 20))
@click.option("--max-messages", default=1, show_default=True, type=click.IntRange(1, 10))
@click.option(
    "--idle-exit",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Exit once the queue has been empty this long (default: run until stopped).",
)
@click.pass_context
def worker_command(
    ctx: click.Context,
    s3: context.S3Place,
    queue: str,
    wait_seconds: int,
    max_messages: int,
    idle_exit: float | None,
) -> None:
    """Draw the metatiles of seed messages from an SQS queue until stopped.

    A message is deleted when all its tiles are stored; a failed one is left for the
    queue's redrive policy. SIGTERM or Ctrl-C finishes the current message first.
    """
    env = context.environment(ctx)
    settings = context.settings_of(env)
    layers = {layer.name: LayerRuntime.build(layer) for layer in settings.served_layers}
    store = context.tile_store(env, settings, s3, pool=4, conditional=settings.s3_conditional_put)
    wms = wms_client(settings, 2)
    sqs = context.sqs_client(env, s3.endpoint_url, read_timeout=wait_seconds + 10.0)

    blanks = SharedBlanks()  # the shared blanks known to be in `store`, across messages

    def handler(body: str) -> RenderCounts:
        return sqs_jobs.handle_message(body, layers, wms, store, blanks)

    click.echo(f"worker: {queue} -> {store.location}", err=True)
    try:
        with (
            console.stop_on_signals() as stop,
            console.progress_bar(None, "worker", unit="msg") as bar,
        ):
            report = run_worker(
                sqs,
                queue,
                handler,
                stop,
                wait_seconds=wait_seconds,
                max_messages=max_messages,
                idle_exit=idle_exit,
                on_message=lambda _id, _counts: bar.update(),
            )
    except sqs_jobs.QueueError as err:
        raise errors.Failed(str(err)) from None
    finally:
        wms.close()
    click.echo(
        f"worker {queue}: {report.done} messages done ({report.tiles} tiles), "
        f"{report.failed} failed, {report.malformed} malformed (left for redrive); "
        f"{report.elapsed:.2f} s ({console.per_second(report.tiles, report.elapsed)} tiles/s)"
    )
    if report.failed or report.malformed:
        ctx.exit(errors.EXIT_FAILED)
