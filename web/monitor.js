// The live training monitor: mountMonitor(element, options) renders one job and keeps it current.
//
// It asks get-job every few seconds while the job is active (only for metrics after the last
// step it has, and with If-None-Match so an unchanged job costs a 304), and stops at a terminal
// state. Everything shown comes from get-job's answer; nothing the user typed or the server sent
// is ever inserted as HTML.
//
// This module composes the others: state.js (what is known), poller.js (get-job), template.js
// (the markup), cards.js, details.js and metric-charts.js (the figures), queue.js (a queued
// job's place in line), adapter-download.js (a completed job's adapter), alerts.js (outcomes,
// warnings, the lost connection, problems) and cancel-dialog.js.

import { bindAdapterDownload, renderAdapter } from "./adapter-download.js";
import { renderAlerts, renderConnection, renderProblem } from "./alerts.js";
import { JobApi } from "./api.js";
import { bindCancelDialog, renderCancel } from "./cancel-dialog.js";
import { renderCards, renderHeader, renderProgress, renderTimes } from "./cards.js";
import { bindTabs, renderDetails } from "./details.js";
import { createMetricCharts } from "./metric-charts.js";
import { Poller } from "./poller.js";
import { renderQueue } from "./queue.js";
import { createState } from "./state.js";
import { createView } from "./template.js";

const DEFAULT_POLL_MS = 5000;

/**
 * Render the monitor for one job into `element` and keep it current.
 *
 * @param {HTMLElement} element
 * @param {object} options
 * @param {string} options.jobId
 * @param {string} options.getJobUrl     base URL of get-job (the job id is appended)
 * @param {string} options.cancelJobUrl  base URL of cancel-job
 * @param {() => Promise<string|null>} options.getAccessToken  the user's Supabase access token
 * @param {number} [options.pollIntervalMs]  5000 unless told otherwise
 * @param {number} [options.maxPoints]       points per series get-job may send (500)
 * @param {boolean} [options.documentTitle]  show the status in the tab's title (a page of its own)
 * @returns {{refresh(): void, destroy(): void}}
 */
export function mountMonitor(element, options) {
  const header = { documentTitle: options.documentTitle ?? false };
  const api = new JobApi(options);
  const state = createState();
  const view = createView(element);
  const charts = createMetricCharts(view);
  let ticker = null;

  /** What changes with the clock alone: times, relative times, the retry countdown. */
  const renderClock = () => {
    const now = Date.now();
    renderConnection(view, state, now);
    if (!state.job) return;
    renderTimes(view, state, now);
    renderQueue(view, state, now);
    renderAlerts(view, state, now);
  };

  const render = () => {
    if (state.problem) renderProblem(view, state);
    renderConnection(view, state, Date.now());
    if (!state.job) return;
    renderHeader(view, state, header);
    renderCancel(view, state);
    renderAdapter(view, state);
    renderProgress(view, state);
    renderCards(view, state);
    renderDetails(view, state);
    charts.render(state);
    renderClock();
  };

  const poller = new Poller({
    api,
    jobId: options.jobId,
    state,
    intervalMs: options.pollIntervalMs ?? DEFAULT_POLL_MS,
    onChange: render,
    onStop: () => clearInterval(ticker),
  });

  bindCancelDialog(view, { api, jobId: options.jobId, state, poller, render });
  const adapterDownload = bindAdapterDownload(view, { api, jobId: options.jobId, state });
  bindTabs(view);
  view.action("retry").addEventListener("click", () => poller.pollNow());

  ticker = setInterval(renderClock, 1000);
  poller.pollNow();

  return {
    refresh: () => poller.pollNow(),
    destroy() {
      poller.stop();
      charts.destroy();
      adapterDownload.destroy();
      element.replaceChildren();
      element.classList.remove("lrm");
    },
  };
}
