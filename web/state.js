// What the monitor knows: the job as get-job last answered it, its metrics series so far, its place
// in line while queued, its adapter once completed, and how the page's own connection to get-job
// is going. The poller, the cancel dialog and the adapter download change it; the renderers only
// read it (charts clear `pointsChanged` once drawn).

import { mergePoints } from "./series.js";

export const ACTIVE = new Set(["queued", "initializing", "running"]);

export const STATUS_LABELS = {
  queued: "Queued",
  initializing: "Initializing",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const statusLabel = (status) => STATUS_LABELS[status] ?? status;

export function createState() {
  return {
    job: null,
    dataset: null,
    points: [],
    pointsChanged: false,
    // When get-job last answered (milliseconds), for "updated … ago".
    updatedAt: null,
    // An ApiError that ends the monitor (refused token, no such job), or null.
    problem: null,
    // Transient failures in a row, when the next try is due, and the last of those errors.
    failures: 0,
    retryAt: null,
    connectionError: null,
    cancelling: false,
    // get-job's `queue` (a queued job's place in line and why it waits) and `adapter` (a completed
    // job's download URLs, valid 15 minutes from the 200 that carried them; a 304 keeps them).
    queue: null,
    adapter: null,
    // The adapter download under way or last tried: see adapter-download.js.
    download: null,
  };
}

/** The job has ended: completed, failed or cancelled. */
export function isTerminal(state) {
  return state.job !== null && !ACTIVE.has(state.job.status);
}

/** Takes in a get-job answer: the job, its dataset and the points after the last step held. */
export function applyAnswer(state, data) {
  // A poll that left before a cancel may come back after it: never step back from a final state.
  if (isTerminal(state) && ACTIVE.has(data.job.status)) return;
  state.job = data.job;
  state.dataset = data.dataset ?? state.dataset;
  state.queue = data.queue ?? null;
  state.adapter = data.adapter ?? null;
  state.points = mergePoints(state.points, data.metrics ?? []);
  state.pointsChanged = true;
}

/** Seconds from one timestamp to another, or null when either is missing. */
export function secondsBetween(from, to) {
  if (!from || !to) return null;
  return (new Date(to).getTime() - new Date(from).getTime()) / 1000;
}
