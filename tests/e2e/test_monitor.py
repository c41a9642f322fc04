"""The monitor page in Chromium, against the real stack: PostgreSQL, S3, the cluster simulator,
the three functions and the scheduler, as `make dev` runs them."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from playwright.sync_api import Route, expect

from infra.local.dev import DEMO_USER_ID, DevStack, mint_access_token
from tests.e2e.conftest import POLL_SECONDS, DemoData, Monitor

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
