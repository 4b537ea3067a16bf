"""The `pitlane` command: worker, demo, simulator, look-ups and operator tools.

Each command builds the settings once and hands them down; the work itself lives in
the modules the commands call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from pitlane.settings import Settings

app = typer.Typer(
    help="pitlane: real-time triggers for car makers and dealers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Manage the Kafka topics of topics.yaml.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
console = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as error:
        console.print(f"[red]invalid settings:[/] {error}")
        raise typer.Exit(2) from error


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug")] = "info",
) -> None:
    """Run a worker against the broker and Redis of the PITLANE_* settings."""
    import faust

    from pitlane.runtime.app import build_app
    from pitlane.topics import load_topics

    settings = _settings()
    logging.getLogger(__name__).info("settings: %s", settings)
    faust_app = build_app(settings, load_topics(settings.topics_file))
    faust.Worker(faust_app, loglevel=loglevel).execute_from_commandline()


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 400,
    seed: Annotated[int, typer.Option(help="Simulator seed; same seed, same traffic.")] = 7,
    timeout: Annotated[float, typer.Option(help="Longest wait for the worker, s.")] = 120,
) -> None:
    """Bring up the embedded stack, run a worker and the simulator, show what flows."""
    from pitlane.demo import run_demo

    run_demo(console, customers=customers, seed=seed, settle_timeout_s=timeout)


@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1, help="Events preloaded per run.")] = 200_000,
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 50_000,
    vehicles: Annotated[int, typer.Option(min=0, help="Simulated vehicles.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    batch_size: Annotated[
        int, typer.Option(min=1, help="PITLANE_BATCH_MAX_RECORDS of the workers.")
    ] = 500,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes in the group.")] = 1,
    repeat: Annotated[
        int, typer.Option(min=1, help="Measure pitlane this many times; the median run counts.")
    ] = 1,
    peers: Annotated[bool, typer.Option(help="Also run benchmarks/peers/ pipelines.")] = False,
    sweep_batch_sizes: Annotated[
        str, typer.Option(help="Comma-separated batch sizes to sweep, e.g. 50,100,500.")
    ] = "",
    latency_loads: Annotated[
        str, typer.Option(help="Comma-separated fractions of peak for latency; '' for none.")
    ] = "0.5",
    latency_rates: Annotated[
        str,
        typer.Option(help="Comma-separated latency loads in events/s, after --latency-loads."),
    ] = "",
    latency_seconds: Annotated[
        float, typer.Option(min=0.1, help="How long each latency load is offered, s.")
    ] = 10.0,
    profile: Annotated[
        bool, typer.Option(help="Profile the batch handler in process (cProfile).")
    ] = False,
    redis_cluster: Annotated[
        bool, typer.Option(help="Run pitlane's workers on a three-primary Redis Cluster.")
    ] = False,
    plots: Annotated[Path | None, typer.Option(help="Write PNG charts to this directory.")] = None,
    timeout: Annotated[float, typer.Option(help="Longest wait for any one run, s.")] = 900,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Measure throughput, CPU, Redis memory and trigger latency of real workers."""
    from pitlane.bench import BenchConfig, run_bench
    from pitlane.bench_harness import Silent
    from pitlane.bench_plots import write_plots
    from pitlane.bench_report import ProgressReporter, report_tables
    from pitlane.topics import load_topics

    settings = _settings()
    try:
        config = BenchConfig(
            events=events,
            customers=customers,
            vehicles=vehicles,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            repeat=repeat,
            peers=peers,
            sweep_batch_sizes=tuple(int(v) for v in sweep_batch_sizes.split(",") if v.strip()),
            latency_loads=tuple(float(v) for v in latency_loads.split(",") if v.strip()),
            latency_rates=tuple(float(v) for v in latency_rates.split(",") if v.strip()),
            latency_seconds=latency_seconds,
            profile=profile,
            timeout_s=timeout,
            redis_cluster=redis_cluster,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    topics = load_topics(settings.topics_file)
    if as_json:
        report = run_bench(config, topics, settings, Silent())
    else:
        with Progress(*ProgressReporter.columns(), console=console) as progress:
            reporter = ProgressReporter(progress)
            report = run_bench(config, topics, settings, reporter)
            reporter.close()
    written = write_plots(report, plots) if plots is not None else []
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        return
    console.print(report_tables(report))
    for path in written:
        console.print(f"wrote {path}")


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 1000,
    vehicles: Annotated[
        int | None, typer.Option(help="Vehicles (default 40% of customers).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same events.")] = 1,
    hours: Annotated[float, typer.Option(help="Event-time span of the traffic.")] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="Event-time start, ISO 8601 with a UTC offset, e.g. 2026-11-22T08:00:00Z "
            "(default: HOURS ago). Fix it, and the same seed gives the same bytes."
        ),
    ] = None,
    pace: Annotated[
        float | None, typer.Option(help="Messages per second (default: flat out).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the events to this JSONL file, one per line in publishing order, "
            "instead of publishing them (no broker needed); `pitlane replay FILE` "
            "publishes them later to the same topics with the same keys and bytes. "
            "The malformed messages simulate adds (about 0.2 %, for the dead-letter "
            "topic) are left out and counted: a JSONL line cannot carry them as they "
            "were, so a replay would reject them or send them to another topic."
        ),
    ] = None,
) -> None:
    """Publish a realistic, seeded mix of upstream events, or write it to a file (--out)."""
    from datetime import timedelta

    from pitlane.simulate import Scenario, generate, publish, record

    if out is not None and pace is not None:
        raise typer.BadParameter("applies to publishing; --out writes at once", param_hint="--pace")
    span = timedelta(hours=hours)
    try:
        origin = datetime.now(UTC) - span if start is None else datetime.fromisoformat(start)
        scenario = Scenario(
            customers=customers, vehicles=vehicles, seed=seed, start=origin, span=span
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if out is not None:
        try:
            recorded = record(generate(scenario), out)
        except OSError as error:
            console.print(f"[red]cannot write {out}:[/] {error}", highlight=False)
            raise typer.Exit(2) from error
        console.print(
            f"wrote {recorded.written:,} events to {out}: {recorded.per_topic}; "
            f"left out {recorded.left_out} malformed messages (not replayable)",
            highlight=False,
        )
        return
    settings = _settings()
    messages = list(generate(scenario))
    with Progress(console=console) as progress:
        task = progress.add_task("publishing", total=len(messages))
        report = publish(
            settings.bootstrap_servers,
            messages,
            on_sent=lambda n: progress.advance(task, n),
            pace=pace,
        )
    console.print(f"published {report.total:,} ({report.malformed} malformed): {report.per_topic}")


@app.command()
def profile(
    customer_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one customer's 360-degree view from Redis."""
    from pitlane.adapters.redis_store import make_store
    from pitlane.profiles import lookup_customer
    from pitlane.render import profile_panel

    settings = _settings()

    async def look_up() -> dict[str, object] | None:
        store = make_store(settings)
        await store.start()
        try:
            return await lookup_customer(store, customer_id, datetime.now(UTC), settings)
        finally:
            await store.close()

    view = asyncio.run(look_up())
    if view is None:
        console.print(f"[red]no customer {customer_id!r}[/]", highlight=False)
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
    else:
        console.print(profile_panel(view))


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Directory for the JSON Schema files.")] = Path(
        "schemas"
    ),
) -> None:
    """Write one JSON Schema per event, trigger and dead-letter type."""
    from pitlane.schema import write_schemas

    written = write_schemas(out)
    console.print(f"wrote {len(written)} schemas to {out}")


@app.command()
def tail(
    topics: Annotated[
        list[str] | None, typer.Argument(help="Topics (default: campaign and suppressed).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many quiet seconds.")
    ] = None,
) -> None:
    """Print triggers as they arrive on the campaign topics."""
    from pitlane.tail import describe, follow
    from pitlane.topics import load_topics

    settings = _settings()
    chosen = topics or load_topics(settings.topics_file).outputs
    for topic, value in follow(
        settings.bootstrap_servers, chosen, from_beginning, count, idle_timeout
    ):
        if as_json:
            sys.stdout.write(json.dumps({"topic": topic, **value}) + "\n")
            sys.stdout.flush()
        else:
            console.print(describe(topic, value), highlight=False, soft_wrap=True)


@app.command()
def replay(
    recordings: Annotated[list[Path], typer.Argument(help="JSONL files or directories.")],
    pace: Annotated[float | None, typer.Option(help="Messages per second.")] = None,
) -> None:
    """Publish recorded events in order (replay a day with PITLANE_CLOCK=event)."""
    from pitlane.replay import plan, recording_files
    from pitlane.replay import replay as send

    settings = _settings()
    try:
        recording = plan(recording_files(recordings))
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from error
    for problem in recording.rejected:
        console.print(f"[yellow]not sent:[/] {problem}", highlight=False)
    with Progress(console=console) as progress:
        task = progress.add_task("replaying", total=len(recording.messages))
        report = send(
            settings.bootstrap_servers,
            recording,
            on_sent=lambda n: progress.advance(task, n),
            pace=pace,
        )
    console.print(
        f"replayed {report.total:,} events up to {recording.last_event_time}; "
        f"{len(recording.rejected)} lines not sent"
    )
    if recording.rejected:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    replication_factor: Annotated[
        int | None, typer.Option(help="Override the file's replication factor.")
    ] = None,
) -> None:
    """Create the topics of topics.yaml that do not exist yet (safe to run again)."""
    from pitlane.topics import create_topics, load_topics

    settings = _settings()
    report = create_topics(
        settings.bootstrap_servers, load_topics(settings.topics_file), replication_factor
    )
    console.print(report.summary())


def main() -> None:
    """Console-script entry point."""
    app()
