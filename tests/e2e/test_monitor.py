"""The monitor page in Chromium, against the real stack: PostgreSQL, S3, the cluster simulator,
the three functions and the scheduler, as `make dev` runs them."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Download, Request, Route, expect

from infra.local.dev import DEMO_USER_ID, DevStack, mint_access_token
from tests.e2e.conftest import POLL_SECONDS, DemoData, Monitor, upload_adapter

# Long enough for any state the fast simulator reaches in a few polls.
SOON = 30_000


def test_job_trains_to_completion_with_charts_and_cards_updating(
    monitor: Monitor, demo: DemoData
) -> None:
    """A demo job goes running -> completed on the page: the loss chart fills with every step, the
    cards follow, and the final cost is shown."""
    # 200 pairs, batch 8, 4 epochs: 100 steps, ten seconds of running to watch.
    job_id = demo.queue_job(bucket="lora-datasets", epochs=4, batch_size=8)
    monitor.open(job_id)

    expect(monitor.field("title")).to_have_text("Support replies", timeout=SOON)
    expect(monitor.field("status")).to_have_text("Running", timeout=SOON)
    expect(monitor.field("queue")).to_be_hidden()
    monitor.page.wait_for_function(
        "Number(document.querySelector('[data-chart=loss]').dataset.points) >= 10", timeout=SOON
    )
    running_points = monitor.chart_points()
    running_loss = monitor.field("training-loss").inner_text()
    assert re.fullmatch(r"\d+\.\d+", running_loss), running_loss
    expect(monitor.field("epoch")).to_have_text(re.compile(r"^\d / 4$"))
    expect(monitor.field("cost-label")).to_have_text("Cost so far")
    monitor.screenshot("monitor-running.png")

    expect(monitor.field("status")).to_have_text("Completed", timeout=SOON)
    job = demo.job(job_id)
    assert job["status"] == "completed"
    assert job["total_steps"] == 100
    # Every step arrived exactly once across the incremental polls (since_step), none lost.
    assert monitor.chart_points() == demo.count_points(job_id) == 100 > running_points
    assert monitor.chart_points("lr") == monitor.chart_points("gpu") == 100
    expect(monitor.field("percent")).to_have_text("100%")
    expect(monitor.field("step")).to_have_text("100 / 100")
    expect(monitor.field("epoch")).to_have_text("4 / 4")
    assert monitor.field("training-loss").inner_text() != running_loss
    expect(monitor.field("validation-loss")).to_have_text(re.compile(r"^\d+\.\d+$"))
    expect(monitor.field("throughput")).to_have_text(re.compile(r"^[\d,.\s]+$"))
    expect(monitor.field("cost-label")).to_have_text("Final cost")
    expect(monitor.field("cost")).to_have_text(re.compile(r"^\$\d"))
    expect(monitor.field("alerts")).to_contain_text("Training finished")
    expect(monitor.page.locator('[data-action="cancel"]')).to_be_hidden()
    # The simulator's run stores no adapter files: nothing to download.
    expect(monitor.field("adapter")).to_be_hidden()
    assert any("since_step=" in request.url for request in monitor.get_job_requests)


def test_cancel_through_the_dialog_and_polling_stops(monitor: Monitor, demo: DemoData) -> None:
    """Cancel asks for confirmation ("Keep training" changes nothing), then cancels the job, shows
    Cancelled, and the page sends no request to get-job after that."""
    job_id = demo.queue_job(bucket="training-files", epochs=40, batch_size=4)
    monitor.open(job_id)
    expect(monitor.field("title")).to_have_text("Product FAQ (imported)", timeout=SOON)
    expect(monitor.field("status")).to_have_text("Running", timeout=SOON)

    cancel = monitor.page.locator('[data-action="cancel"]')
    dialog = monitor.field("dialog")
    cancel.click()
    expect(dialog).to_be_visible()
    monitor.page.get_by_role("button", name="Keep training").click()
    expect(dialog).to_be_hidden()
    assert demo.job(job_id)["status"] == "running"

    cancel.click()
    dialog.get_by_role("button", name="Cancel job").click()
    expect(monitor.field("status")).to_have_text("Cancelled")
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_hidden()
    expect(monitor.field("alerts")).to_contain_text("Training was cancelled")
    assert demo.job(job_id)["status"] == "cancelled"

    requests_at_cancel = len(monitor.get_job_requests)
    monitor.page.wait_for_timeout(3.5 * POLL_SECONDS * 1000)
    assert len(monitor.get_job_requests) == requests_at_cancel


def test_a_forged_token_shows_the_sign_in_error(monitor: Monitor, demo: DemoData) -> None:
    """A token the API does not accept (signed with another secret) shows the sign-in error and
    stops polling."""
    job_id = demo.queue_job()
    forged = mint_access_token("not-the-project-secret-" * 2, DEMO_USER_ID, ttl=timedelta(hours=1))
    monitor.open(job_id, token=forged)

    expect(monitor.field("problem-title")).to_have_text("Sign-in required", timeout=SOON)
    expect(monitor.field("status")).to_have_text("Signed out")
    expect(monitor.field("body")).to_be_hidden()
    monitor.page.wait_for_timeout(2.5 * POLL_SECONDS * 1000)
    assert len(monitor.get_job_requests) == 1


def test_an_unknown_job_and_another_users_job_both_show_not_found(
    monitor: Monitor, dev_stack: DevStack, demo: DemoData
) -> None:
    """A job id that does not exist, and a job that exists but is someone else's, read the same:
    not found."""
    monitor.open(str(uuid.uuid4()))
    expect(monitor.field("problem-title")).to_have_text("Training job not found", timeout=SOON)

    stranger = dev_stack.access_token(user_id=str(uuid.uuid4()), email="stranger@example.com")
    monitor.page.goto("about:blank")
    monitor.open(demo.queue_job(), token=stranger)
    expect(monitor.field("problem-title")).to_have_text("Training job not found", timeout=SOON)
    expect(monitor.field("problem")).not_to_contain_text("Support replies")


def test_a_lost_connection_shows_a_retry_and_recovers(
    monitor: Monitor, dev_stack: DevStack, demo: DemoData
) -> None:
    """When get-job cannot be reached the page says so, keeps the last figures, backs off, and
    comes back with the Retry button once the server answers again."""
    job_id = demo.queue_job(epochs=40)
    monitor.open(job_id)
    expect(monitor.field("status")).to_have_text("Running", timeout=SOON)

    def unreachable(route: Route) -> None:
        route.abort("connectionrefused")

    pattern = f"{dev_stack.urls['get-job']}/**"
    monitor.page.route(pattern, unreachable)
    banner = monitor.field("connection")
    expect(banner).to_be_visible(timeout=SOON)
    expect(banner).to_contain_text("could not be reached")
    expect(monitor.field("connection-text")).to_contain_text("attempt 3", timeout=SOON)
    expect(monitor.field("status")).to_have_text("Running")

    monitor.page.unroute(pattern, unreachable)
    monitor.page.get_by_role("button", name="Retry now").click()
    expect(banner).to_be_hidden(timeout=SOON)
    expect(monitor.field("freshness")).to_contain_text("Live")


def test_a_stalled_job_warns_and_unchanged_polls_are_answered_304(
    monitor: Monitor, demo: DemoData
) -> None:
    """A running job the processor marked stalled shows the stalled warning with since when;
    while nothing changes the page's conditional requests come back 304 and it keeps its
    state."""
    job_id = demo.idle_job(
        steps_done=10, total_steps=75, idle=timedelta(hours=1), stalled_for=timedelta(hours=1)
    )
    statuses: list[int] = []
    monitor.page.on(
        "response",
        lambda response: (
            statuses.append(response.status)
            if response.url.startswith(monitor.stack.urls["get-job"])
            else None
        ),
    )
    monitor.open(job_id)

    stalled = monitor.field("alerts").locator('[data-alert="stalled"]')
    expect(stalled).to_contain_text("No new step since", timeout=SOON)
    expect(stalled).to_contain_text("(1 hour ago): the run may be stalled")
    expect(stalled).to_have_attribute("data-kind", "warning")
    expect(monitor.field("alerts").locator('[data-alert="lost-contact"]')).to_have_count(0)
    expect(monitor.field("status")).to_have_text("Running")
    expect(monitor.field("step")).to_have_text("10 / 75")
    monitor.page.wait_for_timeout(3.5 * POLL_SECONDS * 1000)
    assert statuses[0] == 200
    assert 304 in statuses[1:], statuses
    expect(monitor.field("step")).to_have_text("10 / 75")
    expect(monitor.field("alerts")).to_contain_text("stalled")


def test_lost_contact_with_the_cluster_warns_until_contact_is_back(
    monitor: Monitor, demo: DemoData
) -> None:
    """A running job the processor cannot reach the cluster about shows the lost-contact warning
    with how long ago contact was lost, apart from the page's own connection banner and with the
    job's cost; it goes away once the processor clears it."""
    job_id = demo.idle_job(
        steps_done=30,
        total_steps=75,
        idle=timedelta(minutes=15),
        cost=1.25,
        lost_contact_for=timedelta(minutes=12),
    )
    monitor.open(job_id)

    lost = monitor.field("alerts").locator('[data-alert="lost-contact"]')
    expect(lost).to_contain_text("Lost contact with the GPU cluster since", timeout=SOON)
    expect(lost).to_contain_text("(12 minutes ago)")
    expect(lost).to_have_attribute("data-kind", "warning")
    expect(monitor.field("alerts").locator('[data-alert="stalled"]')).to_have_count(0)
    expect(monitor.field("connection")).to_be_hidden()
    expect(monitor.field("freshness")).to_contain_text("Live")
    expect(monitor.field("status")).to_have_text("Running")
    expect(monitor.field("cost")).to_have_text("$1.25")
    monitor.screenshot("monitor-lost-contact.png")

    demo.set_warnings(job_id)
    expect(lost).to_have_count(0, timeout=SOON)
    expect(monitor.field("status")).to_have_text("Running")


def test_what_the_cluster_says_about_an_active_run_is_shown(
    monitor: Monitor, demo: DemoData
) -> None:
    """A run the cluster says is waiting for a GPU shows the cluster's words, and they go away
    once the cluster says nothing more."""
    job_id = demo.idle_job(steps_done=0, total_steps=75, idle=timedelta(minutes=1))
    waiting = "Waiting for 1 H100 at the cluster: none is free, or the cluster has none."
    demo.set_status_message(job_id, waiting)
    monitor.open(job_id)

    said = monitor.field("alerts").locator('[data-alert="cluster-says"]')
    expect(said).to_have_text(waiting, timeout=SOON)
    demo.set_status_message(job_id, None)
    expect(said).to_have_count(0, timeout=SOON)


def test_no_warning_while_the_processor_reports_neither_stall_nor_lost_contact(
    monitor: Monitor, demo: DemoData
) -> None:
    """With `stalled_since` and `lost_contact_since` both null the page shows no warning, even
    for a job whose steps stopped long ago (judging a stall is the processor's business), and Job
    Info shows the run's start at the cluster."""
    job_id = demo.idle_job(steps_done=50, total_steps=75, idle=timedelta(hours=1))
    monitor.open(job_id)

    expect(monitor.field("status")).to_have_text("Running", timeout=SOON)
    expect(monitor.field("step")).to_have_text("50 / 75")
    # A few polls and clock ticks later, still nothing to warn about.
    monitor.page.wait_for_timeout(2.5 * POLL_SECONDS * 1000)
    assert len(monitor.get_job_requests) >= 3
    expect(monitor.field("alerts")).to_be_empty()
    expect(monitor.field("connection")).to_be_hidden()
    # The Job Info tab has the run's own times at the cluster: started, not ended.
    expect(monitor.field("run-started-at")).not_to_have_text("—")
    expect(monitor.field("run-ended-at")).to_have_text("—")


def test_a_budget_cancellation_says_why(monitor: Monitor, demo: DemoData) -> None:
    """A job the processor stopped at its budget shows Cancelled with the budget it reached."""
    job_id = demo.queue_job(epochs=40, max_cost=0.0001)
    monitor.open(job_id)

    expect(monitor.field("status")).to_have_text("Cancelled", timeout=SOON)
    expect(monitor.field("alerts")).to_contain_text("it reached its budget of $")
    expect(monitor.field("error-message")).to_contain_text("budget")


def test_the_page_fits_a_phone_screen(monitor: Monitor, demo: DemoData) -> None:
    """At a phone's width nothing scrolls sideways and the cards and charts are still there."""
    monitor.page.set_viewport_size({"width": 390, "height": 844})
    monitor.open(demo.queue_job(epochs=40))
    expect(monitor.field("status")).to_have_text("Running", timeout=SOON)
    monitor.page.wait_for_function(
        "Number(document.querySelector('[data-chart=loss]').dataset.points) >= 5", timeout=SOON
    )

    overflow = monitor.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    expect(monitor.field("cost")).to_be_visible()
    chart = monitor.page.locator('[data-chart="loss"] canvas').bounding_box()
    assert chart is not None
    assert 250 < chart["width"] <= 390
    monitor.screenshot("monitor-phone.png")


def test_a_queued_job_shows_its_place_in_line_until_it_is_claimed(
    monitor: Monitor, demo: DemoData
) -> None:
    """A job queued behind its owner's limit shows "#2 in line", why it waits and when it may
    start; it moves up with the poll after the job ahead of it goes, and the place in line gives
    way to the run once a slot frees up and the job is claimed."""
    demo.cancel_others()
    # T4, which nothing else runs on, gets a capacity and a recent 20-minute run: an estimate.
    with demo.gpu_capacity("T4", 4):
        demo.completed_job(gpu_type="T4", run=timedelta(minutes=20), adapter=False)
        holding = demo.held_running_job()
        demo.held_running_job()
        ahead = demo.queue_job(gpu_type="T4")
        job_id = demo.queue_job(gpu_type="T4")
        monitor.open(job_id)

        queue = monitor.field("queue")
        expect(monitor.field("queue-position")).to_have_text("#2 in line", timeout=SOON)
        expect(queue).to_have_attribute("data-reason", "user_limit")
        expect(monitor.field("queue-message")).to_have_text("You have 2 of 2 jobs running.")
        expect(monitor.field("queue-hint")).to_have_text(
            "It starts when one of your running jobs ends."
        )
        # One wave ahead of a 20-minute average run, to the minute: 20 or 21 minutes from now.
        expect(monitor.field("queue-start")).to_have_text(
            re.compile(r"^\S.* \(in 2[01] minutes\)$")
        )
        expect(monitor.field("status")).to_have_text("Queued")
        monitor.screenshot("monitor-queued.png")

        demo.cancel(ahead)
        expect(monitor.field("queue-position")).to_have_text("#1 in line", timeout=SOON)
        expect(monitor.field("queue-message")).to_have_text("You have 2 of 2 jobs running.")

        demo.cancel(holding)
        expect(monitor.field("status")).to_have_text(
            re.compile("^(Initializing|Running|Completed)$"), timeout=SOON
        )
        expect(queue).to_be_hidden()


def test_a_completed_jobs_adapter_downloads_through_fresh_links(
    monitor: Monitor, dev_stack: DevStack, demo: DemoData
) -> None:
    """A completed job with a stored adapter offers both files; Download adapter asks get-job
    again without If-None-Match and saves the files through that answer's links, never the ones
    the page was first given (long expired, say); when get-job or the storage is out of reach it
    says so, offering the fresh links in the second case."""
    job_id = demo.completed_job(adapter=True)
    config = {"peft_type": "LORA", "r": 8, "base_model_name_or_path": "tiny"}
    files = {
        "adapter_model.safetensors": bytes(range(256)) * 64,
        "adapter_config.json": json.dumps(config).encode(),
    }
    upload_adapter(dev_stack, job_id, files)
    storage_gets: list[str] = []

    def watch_storage(request: Request) -> None:
        if request.method == "GET" and request.url.startswith(dev_stack.urls["s3"]):
            storage_gets.append(request.url)

    monitor.page.on("request", watch_storage)
    get_job = f"{dev_stack.urls['get-job']}/**"
    stale = f"{dev_stack.urls['s3']}/lora-artifacts/stale-links"
    staled: list[str] = []

    def stale_links(route: Route) -> None:
        # The first answer's links, as if the page had been open for an hour.
        response = route.fetch()
        body = response.json()
        adapter = (body.get("data") or {}).get("adapter")
        if adapter:
            adapter["files"] = {name: f"{stale}/{name}" for name in adapter["files"]}
            staled.extend(adapter["files"])
        route.fulfill(response=response, json=body)

    monitor.page.route(get_job, stale_links, times=1)
    monitor.open(job_id)

    expect(monitor.field("status")).to_have_text("Completed", timeout=SOON)
    section = monitor.field("adapter")
    expect(section).to_be_visible()
    listed = monitor.field("adapter-files").locator("li")
    expect(listed).to_have_count(2)
    expect(listed.nth(0)).to_contain_text("adapter_model.safetensors")
    expect(listed.nth(1)).to_contain_text("adapter_config.json")
    button = section.get_by_role("button", name="Download adapter")
    status = monitor.field("adapter-status")

    def unreachable(route: Route) -> None:
        route.abort("connectionrefused")

    monitor.page.route(get_job, unreachable)
    button.click()
    expect(status).to_contain_text("the server could not be reached")
    expect(status).to_have_attribute("data-kind", "error")
    expect(button).to_be_enabled()
    monitor.page.unroute(get_job, unreachable)
    assert sorted(staled) == ["adapter_config.json", "adapter_model.safetensors"]

    # Storage the page cannot reach (down, or no CORS rule for its origin): the fresh links are
    # offered to open directly.
    storage = f"{dev_stack.urls['s3']}/**"
    monitor.page.route(storage, unreachable)
    button.click()
    expect(status).to_contain_text(
        "adapter_model.safetensors could not be downloaded here: the storage could not be reached"
    )
    expect(listed.nth(0)).to_have_attribute("data-state", "failed")
    fallback = listed.nth(0).get_by_role("link", name="adapter_model.safetensors")
    expect(fallback).to_have_attribute("target", "_blank")
    assert (fallback.get_attribute("href") or "").startswith(dev_stack.urls["s3"])
    monitor.page.unroute(storage, unreachable)

    downloads: list[Download] = []

    def keep(download: Download) -> None:
        downloads.append(download)

    monitor.page.on("download", keep)
    asked_before = len(monitor.get_job_requests)
    got_before = len(storage_gets)
    button.click()
    expect(status).to_have_text(
        re.compile(
            r"^Downloaded adapter_model\.safetensors \(.+\) and adapter_config\.json \(.+\)\.$"
        ),
        timeout=SOON,
    )
    expect(status).to_have_attribute("data-kind", "success")
    expect(listed.nth(0)).to_have_attribute("data-state", "saved")
    expect(listed.nth(1)).to_have_attribute("data-state", "saved")
    monitor.screenshot("monitor-adapter.png")

    asked = monitor.get_job_requests[asked_before:]
    assert len(asked) == 1
    assert "if-none-match" not in asked[0].all_headers()
    answer = asked[0].response()
    assert answer is not None
    assert answer.status == 200
    fresh = answer.json()["data"]["adapter"]["files"]
    assert sorted(storage_gets[got_before:]) == sorted(fresh.values())
    assert not any(url.startswith(stale) for url in storage_gets)
    for _ in range(50):
        if len(downloads) == 2:
            break
        monitor.page.wait_for_timeout(100)
    saved = {
        download.suggested_filename: Path(download.path()).read_bytes() for download in downloads
    }
    assert saved == files
