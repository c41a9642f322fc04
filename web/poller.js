// Polling get-job: every few seconds while the job is active, only for the steps after the last
// one held and with If-None-Match, so that an unchanged job costs a 304. A transient failure backs
// off; a refusal (401, 404...) or a terminal state stops polling for good.

import { ApiError } from "./api.js";
import { applyAnswer, isTerminal } from "./state.js";
import { lastStep } from "./series.js";

const MAX_RETRY_MS = 60000;

export class Poller {
  #api;
  #jobId;
  #state;
  #intervalMs;
  #onChange;
  #onStop;
  #etag = null;
  #timer = null;
  #inFlight = null;

  /**
   * @param {object} options
   * @param {import("./api.js").JobApi} options.api
   * @param {string} options.jobId
   * @param {object} options.state       see state.js; updated in place
   * @param {number} options.intervalMs
   * @param {() => void} options.onChange  after every answer or failure
   * @param {() => void} options.onStop    once polling has stopped for good
   */
  constructor({ api, jobId, state, intervalMs, onChange, onStop }) {
    this.#api = api;
    this.#jobId = jobId;
    this.#state = state;
    this.#intervalMs = intervalMs;
    this.#onChange = onChange;
    this.#onStop = onStop;
    this.stopped = false;
  }

  /** Ask get-job now (the first load, the Retry button, `refresh()`). */
  pollNow() {
    if (this.stopped) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#poll();
  }

  /** Stop for good: no further request, and the one under way is abandoned. */
  stop() {
    this.stopped = true;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#onStop();
    this.#inFlight?.abort();
  }

  async #poll() {
    if (this.#inFlight) return;
    const state = this.#state;
    const controller = new AbortController();
    this.#inFlight = controller;
    try {
      const result = await this.#api.getJob(this.#jobId, {
        sinceStep: lastStep(state.points),
        etag: this.#etag,
        signal: controller.signal,
      });
      if (this.stopped) return;
      if (!result.notModified) {
        this.#etag = result.etag;
        applyAnswer(state, result.data);
      }
      state.failures = 0;
      state.retryAt = null;
      state.updatedAt = Date.now();
      this.#onChange();
      this.#scheduleNext(this.#intervalMs);
    } catch (error) {
      if (error.name === "AbortError" || this.stopped) return;
      this.#failed(error);
    } finally {
      if (this.#inFlight === controller) this.#inFlight = null;
    }
  }

  #failed(error) {
    const state = this.#state;
    const apiError =
      error instanceof ApiError ? error : new ApiError(0, "client", String(error.message));
    if (!apiError.transient) {
      state.problem = apiError;
      this.stop();
      this.#onChange();
      return;
    }
    state.failures += 1;
    // Back off: the poll interval, doubled after each failure up to a minute, with jitter so
    // that many open pages do not all come back at the same moment.
    const base = Math.min(MAX_RETRY_MS, this.#intervalMs * 2 ** (state.failures - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    state.retryAt = Date.now() + delay;
    state.connectionError = apiError;
    this.#onChange();
    this.#scheduleNext(delay);
  }

  #scheduleNext(delay) {
    if (this.stopped) return;
    if (isTerminal(this.#state)) {
      this.stop();
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#poll();
    }, delay);
  }
}
