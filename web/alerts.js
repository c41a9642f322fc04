// What the page has to say beyond the figures: how a job ended, a running job that may be
// stalled, the page's own lost connection to get-job, and the problems that end the monitor
// (refused token, no such job).

import * as fmt from "./format.js";
import { isTerminal, secondsBetween } from "./state.js";
import { latest } from "./series.js";

// As the processor judges a stall: no step for ten times the usual step time, and never sooner
// than five minutes (PROCESSOR_STALL_FACTOR, PROCESSOR_STALL_MIN_SECONDS).
const STALL_FACTOR = 10;
const STALL_MIN_SECONDS = 300;

/** The list under the header: one alert per fact. */
export function renderAlerts(view, state, now) {
  const alerts = isTerminal(state) ? outcome(state.job) : warnings(state, now);
  view.fields.alerts.replaceChildren(...alerts.map(alertElement));
}

function alertElement({ kind, text }) {
  const alert = document.createElement("p");
  alert.className = `lrm-alert lrm-alert-${kind}`;
  alert.dataset.kind = kind;
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

function warnings(state, now) {
  const idle = stalledFor(state, now);
  if (idle === null) return [];
  return [
    {
      key: "stalled",
      kind: "warning",
      text:
        `No progress for ${fmt.duration(idle)}: the run may be stalled. ` +
        "The runner keeps checking it and fails it if the cluster reports a problem.",
    },
  ];
}

/** Seconds since the step counter last moved, when that is long enough to call a stall. */
function stalledFor({ job, points }, now) {
  if (job.status !== "running") return null;
  const lastMove = job.last_progress_at ?? latest(points, "step")?.recorded_at;
  if (!lastMove) return null;
  const idle = (now - new Date(lastMove).getTime()) / 1000;
  const ran = secondsBetween(job.started_at, lastMove);
  const perStep = ran !== null && job.current_step > 0 ? ran / job.current_step : 0;
  return idle > Math.max(STALL_MIN_SECONDS, STALL_FACTOR * perStep) ? idle : null;
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
