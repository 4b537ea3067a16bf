"""`pitlane demo`: the whole product on one machine in a couple of minutes.

Brings up the embedded stack, runs a real worker process against it, publishes a
simulated day of upstream traffic, shows live what flows, then looks a few customers
up through the worker's HTTP API the way a dealer's screen would.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis
from rich.console import Console, Group
from rich.json import JSON
from rich.live import Live
from rich.panel import Panel
from rich.progress import Progress

from pitlane.adapters.redis_store import decode
from pitlane.render import counters_table, profile_panel
from pitlane.simulate import Scenario, generate, publish
from pitlane.stack.embedded import EmbeddedStack, free_port
from pitlane.tail import follow
from pitlane.worker_process import WorkerProcess, embedded_worker_env

DEMO_ABANDONMENT_WINDOW_S = 20
"""The demo's abandonment window: 20 s instead of a day, so reminders fire on screen."""


def run_demo(console: Console, customers: int, seed: int, settle_timeout_s: float) -> None:
    """Run the demo end to end; every process it starts is stopped before it returns."""
    started = time.monotonic()
    with console.status("starting the embedded stack (tansu broker, redis-server)..."):
        stack = EmbeddedStack()
        stack.start()
    with stack:
        console.print(f"[green]stack up[/] broker {stack.broker_url}  redis {stack.redis_url}")
        env = embedded_worker_env(
            stack, abandonment_window_s=DEMO_ABANDONMENT_WINDOW_S, sweep_interval_s=0.5
        )
        worker = WorkerProcess(env, free_port(), stack.workdir / "worker.log")
        with worker:
            with console.status("worker joining its consumer group..."):
                worker.wait_ready()
            console.print(f"[green]worker ready[/] (pid {worker.pid}, web :{worker.web_port})")
            console.print(
                f"[yellow]demo setting:[/] abandonment window {DEMO_ABANDONMENT_WINDOW_S} s "
                "(production default: 24 h), so abandoned configurations fire while you watch"
            )
            scenario = Scenario(
                customers=customers, seed=seed, start=datetime.now(UTC) - timedelta(hours=1)
            )
            messages = list(generate(scenario))
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("publishing upstream events", total=len(messages))
                report = publish(
                    stack.bootstrap_servers,
                    messages,
                    on_sent=lambda n: progress.advance(task, n),
                )
            console.print(
                f"published {report.total:,} events for {customers:,} customers "
                f"({report.malformed} deliberately malformed)"
            )
            _follow(console, worker, stack.redis_url, report.total, settle_timeout_s)
            _show_triggers(console, stack.bootstrap_servers)
            _show_profiles(console, worker, stack.redis_url)
        console.print(f"[bold green]demo finished[/] in {time.monotonic() - started:.0f}s")


def _profile_counts(redis_url: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url)
    try:
        return {
            name: sum(1 for _ in client.scan_iter(match=pattern, count=1000))
            for name, pattern in (
                ("customer profiles", "pitlane:cust:*"),
                ("anonymous profiles", "pitlane:anon:*"),
                ("vehicles", "pitlane:veh:*"),
            )
        }
    finally:
        client.close()


def _follow(
    console: Console, worker: WorkerProcess, redis_url: str, published: int, timeout_s: float
) -> None:
    """Live counters until everything published is consumed and the last abandonment
    window has passed, so every reminder the traffic earns has fired."""
    deadline = time.monotonic() + timeout_s
    consumed_at: float | None = None
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            stats = worker.stats()
            consumed = stats["events_total"] + stats["dead_letters"]
            flow = {
                "consumed": consumed,
                "dead letters": stats["dead_letters"],
                "duplicates ignored": stats["duplicates"],
                "batches": stats["batches"],
                **_profile_counts(redis_url),
            }
            fired = {f"fired: {kind}": n for kind, n in stats["triggers"].items()}
            held = {f"held back: {reason}": n for reason, n in stats["suppressed"].items()}
            live.update(
                Group(
                    counters_table("events in, by type", stats["events"]),
                    counters_table("flow", flow),
                    counters_table("triggers", {**fired, **held}),
                )
            )
            now = time.monotonic()
            if consumed >= published and consumed_at is None:
                consumed_at = now
            if consumed_at is not None and now - consumed_at > DEMO_ABANDONMENT_WINDOW_S + 2:
                return
            if now > deadline:
                raise TimeoutError(
                    f"worker consumed {consumed} of {published} events in {timeout_s:.0f}s"
                )
            time.sleep(0.5)


def _show_triggers(console: Console, bootstrap_servers: list[str]) -> None:
    """A few triggers as a channel receives them, with their personalised context."""
    shown: dict[str, int] = {}
    for topic, trigger in follow(
        bootstrap_servers,
        ["campaign.abandoned-configuration", "campaign.service-due"],
        from_beginning=True,
        idle_timeout_s=1.0,
    ):
        if shown.get(topic, 0) >= 2:
            continue
        shown[topic] = shown.get(topic, 0) + 1
        console.print(
            Panel(
                JSON.from_data(trigger),
                title=f"{topic}: {trigger['type']} for {trigger['customer_id']}",
                expand=False,
            )
        )


def _show_profiles(console: Console, worker: WorkerProcess, redis_url: str) -> None:
    """Look up the richest few customers through the worker's HTTP API."""
    client = redis.Redis.from_url(redis_url)
    try:
        scored = []
        for key in client.scan_iter(match="pitlane:cust:*", count=1000):
            state = decode(client.get(key)).state
            if state is None:
                continue
            score = (
                2 * bool(state["anon_ids"])
                + 2 * bool(state["vehicles"])
                + bool(state["saved"])
                + bool(state["sessions"])
            )
            scored.append((score, state["id"]))
    finally:
        client.close()
    for _, customer_id in sorted(scored, reverse=True)[:3]:
        status, view = worker.get(f"/customers/{customer_id}")
        console.print(f"GET /customers/{customer_id} -> {status}")
        console.print(profile_panel(view))
