// What the page has to say beyond the figures: how a job ended, the processor's warnings about a
// running one (stalled, cluster out of reach), the page's own lost connection to get-job, and
// the problems that end the monitor (refused token, no such job).
//
// The warnings are the processor's verdicts as get-job reports them (`stalled_since`,
// `lost_contact_since`); the page never judges a stall or an outage itself.

import * as fmt from "./format.js";
import { ACTIVE, isTerminal, secondsBetween } from "./state.js";

/** The list under the header: one alert per fact, in the order given. */
export function renderAlerts(view, state, now) {
  const alerts = isTerminal(state) ? outcome(state.job) : warnings(state.job, now);
  const list = view.fields.alerts;
  const shown = [...list.children];
  const same =
    shown.length === alerts.length &&
    shown.every((node, index) => node.dataset.alert === alerts[index].key);
  if (!same) {
    list.replaceChildren(...alerts.map(alertElement));
    return;
  }
  // The same alerts as before: touch only the text that changed, so that a screen reader (the
  // list is a polite live region) hears of a change, not of every poll or clock tick.
  alerts.forEach(({ text }, index) => {
    if (shown[index].textContent !== text) shown[index].textContent = text;
  });
}

function alertElement({ key, kind, text }) {
  const alert = document.createElement("p");
  alert.className = `lrm-alert lrm-alert-${kind}`;
  alert.dataset.kind = kind;
  alert.dataset.alert = key;
  alert.textContent = text;
  return alert;
}

function outcome(job) {
  if (job.status === "completed") {
    const took = secondsBetween(job.started_at, job.completed_at);
    return [
      {
        key: "completed",
        kind: "success",
        text:
          `Training finished${took === null ? "" : ` in ${fmt.duration(took)}`}. ` +
          `Final cost ${fmt.money(job.final_cost ?? job.current_cost)}.`,
      },
    ];
  }
  if (job.status === "failed") {
    const why = job.error_message ?? "the cluster gave no reason.";
    return [{ key: "failed", kind: "error", text: `Training failed: ${why}` }];
  }
  if (job.status === "cancelled") {
    const why = job.error_message
      ? `Training was stopped: ${job.error_message}.`
      : "Training was cancelled.";
    const billed = fmt.money(job.final_cost ?? job.current_cost);
    return [{ key: "cancelled", kind: "neutral", text: `${why} Billed ${billed}.` }];
  }
  return [];
}

function warnings(job, now) {
  if (!ACTIVE.has(job.status)) return [];
  const alerts = [];
  if (job.lost_contact_since) {
    alerts.push({
      key: "lost-contact",
      kind: "warning",
      text:
        `Lost contact with the GPU cluster since ${since(job.lost_contact_since, now)}. ` +
        "The training may well be going on; the figures below are from the cluster's last " +
        "report. The runner keeps trying, and gives the job up if the cluster stays out of reach.",
    });
  }
  if (job.status_message) {
    // What the cluster says about the run, e.g. why it still waits for a GPU.
    alerts.push({ key: "cluster-says", kind: "neutral", text: job.status_message });
  }
  if (job.stalled_since) {
    // The processor dates a stall from the last step that moved the counter.
    alerts.push({
      key: "stalled",
      kind: "warning",
      text:
        `No new step since ${since(job.stalled_since, now)}: the run may be stalled. ` +
        "The runner keeps checking it and fails it if the cluster reports a problem.",
    });
  }
  return alerts;
}

/** "14:05 (12 minutes ago)". */
function since(timestamp, now) {
  return `${fmt.timeOfDay(timestamp)} (${fmt.fromNow(timestamp, now)})`;
}

/** The banner for the page's own connection to get-job: shown while retrying. */
export function renderConnection(view, state, now) {
  const { fields } = view;
  const lost = state.retryAt !== null && !state.problem;
  fields.connection.hidden = !lost;
  if (!lost) return;
  const seconds = Math.max(0, Math.ceil((state.retryAt - now) / 1000));
  const reason =
    state.connectionError?.status > 0
      ? `The server answered ${state.connectionError.status}.`
      : "The server could not be reached.";
  const shown = state.job ? " The figures below may be out of date." : "";
  fields["connection-text"].textContent =
    `${reason}${shown} Retrying in ${seconds} s (attempt ${state.failures + 1}).`;
}

/** A problem that ends the monitor replaces the body with what to do about it. */
export function renderProblem(view, state) {
  const { fields } = view;
  const { status, message } = state.problem;
  const [title, text] =
    status === 401
      ? [
          "Sign-in required",
          "Your session has expired or is not valid. Sign in again, then reload this page.",
        ]
      : status === 404
        ? [
            "Training job not found",
            "There is no training job with this ID in your account. Check the link, or open " +
              "the job from your list of training jobs.",
          ]
        : status === 403
          ? ["Not allowed", message]
          : ["This job cannot be shown", message];
  fields["problem-title"].textContent = title;
  fields["problem-text"].textContent = text;
  fields.problem.hidden = false;
  fields.problem.dataset.status = String(status);
  fields.body.hidden = true;
  fields.status.textContent = { 401: "Signed out", 404: "Not found" }[status] ?? "Unavailable";
  fields.status.dataset.status = "problem";
  fields.title.textContent = state.dataset?.name ?? "Training job";
  view.action("cancel").hidden = true;
}
