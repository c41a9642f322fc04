// The live training monitor: mountMonitor(element, options) renders one job and keeps it current.
//
// It asks get-job every few seconds while the job is active (only for metrics after the last
// step it has, and with If-None-Match so an unchanged job costs a 304), and stops at a terminal
// state. Everything shown comes from get-job's answer; nothing the user typed or the server sent
// is ever inserted as HTML.

import { ApiError, JobApi } from "./api.js";
import { lineChart } from "./charts.js";
import * as fmt from "./format.js";
import { columns, first, lastStep, latest, lowest, mean, mergePoints } from "./series.js";

const ACTIVE = new Set(["queued", "initializing", "running"]);
const STATUS_LABELS = {
  queued: "Queued",
  initializing: "Initializing",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};
const DEFAULT_POLL_MS = 5000;
const MAX_RETRY_MS = 60000;
// As the processor judges a stall: no step for ten times the usual step time, and never sooner
// than five minutes (PROCESSOR_STALL_FACTOR, PROCESSOR_STALL_MIN_SECONDS).
const STALL_FACTOR = 10;
const STALL_MIN_SECONDS = 300;

const COLORS = {
  training: "#4f46e5",
  validation: "#e8590c",
  learningRate: "#0f766e",
  gpu: "#7c3aed",
  memory: "#94a3b8",
};

let instances = 0;

const TEMPLATE = (id) => `
  <div class="lrm-shell">
    <header class="lrm-header">
      <div class="lrm-heading">
        <p class="lrm-eyebrow">LoRA fine-tuning</p>
        <h1 class="lrm-title" data-field="title">Loading training job…</h1>
        <p class="lrm-subtitle">
          <span data-field="subtitle"></span>
          <span class="lrm-freshness" data-field="freshness"></span>
        </p>
      </div>
      <div class="lrm-header-actions">
        <span class="lrm-badge" data-field="status" data-status="loading">Loading</span>
        <button type="button" class="lrm-button lrm-button-danger" data-action="cancel" hidden>
          Cancel job
        </button>
      </div>
    </header>

    <div class="lrm-alert lrm-alert-error lrm-connection" data-field="connection" role="alert" hidden>
      <div>
        <strong>Connection lost.</strong>
        <span data-field="connection-text"></span>
      </div>
      <button type="button" class="lrm-button" data-action="retry">Retry now</button>
    </div>
    <div class="lrm-alerts" data-field="alerts" aria-live="polite"></div>

    <section class="lrm-problem" data-field="problem" hidden>
      <h2 data-field="problem-title"></h2>
      <p data-field="problem-text"></p>
    </section>

    <div class="lrm-body" data-field="body">
      <section class="lrm-card lrm-progress" aria-label="Progress">
        <div class="lrm-progress-head">
          <span class="lrm-label">Progress</span>
          <strong class="lrm-progress-percent" data-field="percent">0%</strong>
        </div>
        <div class="lrm-bar" role="progressbar" aria-label="Training progress"
             aria-valuemin="0" aria-valuemax="100" aria-valuenow="0" data-field="bar">
          <div class="lrm-bar-fill" data-field="bar-fill"></div>
        </div>
        <dl class="lrm-facts">
          <div><dt>Epoch</dt><dd data-field="epoch">—</dd></div>
          <div><dt>Step</dt><dd data-field="step">—</dd></div>
          <div><dt data-field="eta-label">Estimated completion</dt><dd data-field="eta">—</dd></div>
          <div><dt>Elapsed</dt><dd data-field="elapsed">—</dd></div>
        </dl>
      </section>

      <section class="lrm-metrics" aria-label="Latest metrics">
        <article class="lrm-card lrm-metric">
          <h2 class="lrm-label">Training loss</h2>
          <p class="lrm-metric-value" data-field="training-loss">—</p>
          <p class="lrm-metric-note" data-field="training-loss-note"></p>
        </article>
        <article class="lrm-card lrm-metric">
          <h2 class="lrm-label">Validation loss</h2>
          <p class="lrm-metric-value" data-field="validation-loss">—</p>
          <p class="lrm-metric-note" data-field="validation-loss-note"></p>
        </article>
        <article class="lrm-card lrm-metric">
          <h2 class="lrm-label">Throughput</h2>
          <p class="lrm-metric-value">
            <span data-field="throughput">—</span><span class="lrm-unit">tokens/s</span>
          </p>
          <p class="lrm-metric-note" data-field="throughput-note"></p>
        </article>
        <article class="lrm-card lrm-metric">
          <h2 class="lrm-label" data-field="cost-label">Cost so far</h2>
          <p class="lrm-metric-value" data-field="cost">—</p>
          <p class="lrm-metric-note" data-field="cost-note"></p>
        </article>
      </section>

      <div class="lrm-tabs" role="tablist" aria-label="Job details">
        <button type="button" role="tab" id="${id}-tab-charts" aria-controls="${id}-charts"
                aria-selected="true" data-tab="charts">Metrics &amp; Charts</button>
        <button type="button" role="tab" id="${id}-tab-config" aria-controls="${id}-config"
                aria-selected="false" tabindex="-1" data-tab="config">Configuration</button>
        <button type="button" role="tab" id="${id}-tab-info" aria-controls="${id}-info"
                aria-selected="false" tabindex="-1" data-tab="info">Job Info</button>
      </div>

      <section role="tabpanel" id="${id}-charts" aria-labelledby="${id}-tab-charts"
               class="lrm-panel lrm-charts" data-panel="charts">
        <article class="lrm-card lrm-chart-card lrm-chart-wide">
          <header class="lrm-chart-head">
            <h2>Loss</h2>
            <p class="lrm-chart-note">Training and validation loss by step</p>
          </header>
          <div class="lrm-chart" data-chart="loss">
            <p class="lrm-chart-empty" data-field="chart-empty">Waiting for the first training step…</p>
          </div>
        </article>
        <article class="lrm-card lrm-chart-card">
          <header class="lrm-chart-head">
            <h2>Learning rate</h2>
            <p class="lrm-chart-note" data-field="lr-note">Schedule by step</p>
          </header>
          <div class="lrm-chart" data-chart="lr"></div>
        </article>
        <article class="lrm-card lrm-chart-card">
          <header class="lrm-chart-head">
            <h2>GPU utilization</h2>
            <p class="lrm-chart-note" data-field="gpu-note"></p>
          </header>
          <div class="lrm-chart" data-chart="gpu"></div>
        </article>
      </section>

      <section role="tabpanel" id="${id}-config" aria-labelledby="${id}-tab-config"
               class="lrm-panel lrm-details" data-panel="config" hidden>
        <article class="lrm-card">
          <h2>Hyperparameters</h2>
          <dl class="lrm-table" data-field="hyperparameters"></dl>
        </article>
        <article class="lrm-card">
          <h2>Hardware</h2>
          <dl class="lrm-table">
            <div><dt>GPU type</dt><dd data-field="gpu-type">—</dd></div>
            <div><dt>GPU count</dt><dd data-field="gpu-count">—</dd></div>
          </dl>
          <h2>Dataset</h2>
          <dl class="lrm-table">
            <div><dt>Name</dt><dd data-field="dataset-name">—</dd></div>
            <div><dt>Storage bucket</dt><dd data-field="dataset-bucket">—</dd></div>
            <div><dt>Path</dt><dd class="lrm-mono" data-field="dataset-path">—</dd></div>
            <div><dt>Training pairs</dt><dd data-field="dataset-pairs">—</dd></div>
          </dl>
        </article>
      </section>

      <section role="tabpanel" id="${id}-info" aria-labelledby="${id}-tab-info"
               class="lrm-panel" data-panel="info" hidden>
        <article class="lrm-card">
          <dl class="lrm-table">
            <div><dt>Job ID</dt><dd class="lrm-mono" data-field="job-id">—</dd></div>
            <div><dt>External job ID</dt><dd class="lrm-mono" data-field="external-id">—</dd></div>
            <div><dt>Dataset ID</dt><dd class="lrm-mono" data-field="dataset-id">—</dd></div>
            <div><dt>Status</dt><dd data-field="info-status">—</dd></div>
            <div><dt>Created</dt><dd data-field="created-at">—</dd></div>
            <div><dt>Started</dt><dd data-field="started-at">—</dd></div>
            <div><dt>Completed</dt><dd data-field="completed-at">—</dd></div>
            <div><dt>Last updated</dt><dd data-field="updated-at">—</dd></div>
            <div><dt>Error message</dt><dd data-field="error-message">—</dd></div>
          </dl>
        </article>
      </section>
    </div>

    <dialog class="lrm-dialog" data-field="dialog" aria-labelledby="${id}-dialog-title">
      <h2 id="${id}-dialog-title">Cancel this training job?</h2>
      <p>
        Training stops where it is and cannot be resumed. The compute used so far is billed:
        <strong data-field="dialog-cost">—</strong>.
      </p>
      <p class="lrm-dialog-error" data-field="dialog-error" role="alert" hidden></p>
      <div class="lrm-dialog-actions">
        <button type="button" class="lrm-button" data-action="keep">Keep training</button>
        <button type="button" class="lrm-button lrm-button-danger" data-action="confirm-cancel">
          Cancel job
        </button>
      </div>
    </dialog>
  </div>
`;

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
  const monitor = new Monitor(element, options);
  monitor.start();
  return { refresh: () => monitor.pollNow(), destroy: () => monitor.destroy() };
}

class Monitor {
  constructor(element, options) {
    this.jobId = options.jobId;
    this.pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
    this.setsDocumentTitle = options.documentTitle ?? false;
    this.api = new JobApi(options);
    this.root = element;
    this.root.classList.add("lrm");
    this.root.innerHTML = TEMPLATE(`lrm${(instances += 1)}`);
    this.fields = Object.fromEntries(
      [...this.root.querySelectorAll("[data-field]")].map((node) => [node.dataset.field, node]),
    );

    this.job = null;
    this.dataset = null;
    this.points = [];
    this.pointsChanged = false;
    this.etag = null;
    this.updatedAt = null;
    this.problem = null;
    this.failures = 0;
    this.retryAt = null;
    this.connectionError = null;
    this.cancelling = false;

    this.timer = null;
    this.inFlight = null;
    this.ticker = null;
    this.stopped = false;
    this.charts = this.#createCharts();
    this.#bindEvents();
  }

  start() {
    this.ticker = setInterval(() => this.#renderClock(), 1000);
    this.pollNow();
  }

  destroy() {
    this.#stopPolling();
    for (const chart of Object.values(this.charts)) chart.destroy();
    this.root.replaceChildren();
    this.root.classList.remove("lrm");
  }

  /** Ask get-job now (the Retry button; also the first load). */
  pollNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.#poll();
  }

  get terminal() {
    return this.job !== null && !ACTIVE.has(this.job.status);
  }

  async #poll() {
    if (this.inFlight) return;
    const controller = new AbortController();
    this.inFlight = controller;
    try {
      const result = await this.api.getJob(this.jobId, {
        sinceStep: lastStep(this.points),
        etag: this.etag,
        signal: controller.signal,
      });
      if (this.stopped) return;
      if (!result.notModified) {
        this.etag = result.etag;
        this.#apply(result.data);
      }
      this.failures = 0;
      this.retryAt = null;
      this.updatedAt = Date.now();
      this.render();
      this.#scheduleNext(this.pollMs);
    } catch (error) {
      if (error.name === "AbortError" || this.stopped) return;
      this.#failed(error);
    } finally {
      if (this.inFlight === controller) this.inFlight = null;
    }
  }

  #apply(data) {
    // A poll that left before a cancel may come back after it: never step back from a final state.
    if (this.terminal && ACTIVE.has(data.job.status)) return;
    this.job = data.job;
    this.dataset = data.dataset ?? this.dataset;
    this.points = mergePoints(this.points, data.metrics ?? []);
    this.pointsChanged = true;
  }

  #failed(error) {
    const apiError =
      error instanceof ApiError ? error : new ApiError(0, "client", String(error.message));
    if (!apiError.transient) {
      this.problem = apiError;
      this.#stopPolling();
      this.render();
      return;
    }
    this.failures += 1;
    // Back off: the poll interval, doubled after each failure up to a minute, with jitter so
    // that many open pages do not all come back at the same moment.
    const base = Math.min(MAX_RETRY_MS, this.pollMs * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.retryAt = Date.now() + delay;
    this.connectionError = apiError;
    this.render();
    this.#scheduleNext(delay);
  }

  #scheduleNext(delay) {
    if (this.stopped) return;
    if (this.terminal) {
      this.#stopPolling();
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.#poll();
    }, delay);
  }

  #stopPolling() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    clearInterval(this.ticker);
    this.inFlight?.abort();
  }

  async #confirmCancel() {
    if (this.cancelling) return;
    this.cancelling = true;
    this.fields["dialog-error"].hidden = true;
    this.render();
    try {
      const job = await this.api.cancelJob(this.jobId);
      this.job = { ...this.job, ...job };
      this.fields.dialog.close();
      this.#stopPolling();
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        // It finished on its own meanwhile: show how it ended.
        this.fields.dialog.close();
        this.pollNow();
      } else if (error instanceof ApiError && (error.status === 401 || error.status === 404)) {
        this.fields.dialog.close();
        this.problem = error;
        this.#stopPolling();
      } else {
        this.fields["dialog-error"].textContent =
          `The job could not be cancelled: ${error.message} Try again in a moment.`;
        this.fields["dialog-error"].hidden = false;
      }
    } finally {
      this.cancelling = false;
      this.render();
    }
  }

  #bindEvents() {
    const on = (action, handler) =>
      this.root.querySelector(`[data-action="${action}"]`).addEventListener("click", handler);
    on("cancel", () => {
      this.fields["dialog-error"].hidden = true;
      this.fields.dialog.showModal();
    });
    on("keep", () => this.fields.dialog.close());
    on("confirm-cancel", () => this.#confirmCancel());
    on("retry", () => this.pollNow());
    this.fields.dialog.addEventListener("cancel", (event) => {
      if (this.cancelling) event.preventDefault();
    });

    const tabs = [...this.root.querySelectorAll('[role="tab"]')];
    const select = (tab) => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        this.root.querySelector(`[data-panel="${other.dataset.tab}"]`).hidden = !selected;
      }
    };
    tabs.forEach((tab, index) => {
      tab.addEventListener("click", () => select(tab));
      tab.addEventListener("keydown", (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (!step) return;
        const next = tabs[(index + step + tabs.length) % tabs.length];
        select(next);
        next.focus();
      });
    });
  }

  #createCharts() {
    const chart = (name, spec) =>
      lineChart(this.root.querySelector(`[data-chart="${name}"]`), spec);
    return {
      loss: chart("loss", {
        axes: [{ scale: "loss", format: fmt.tick }],
        series: [
          { label: "Training loss", color: COLORS.training, format: fmt.loss },
          {
            label: "Validation loss",
            color: COLORS.validation,
            points: true,
            format: fmt.loss,
          },
        ],
      }),
      lr: chart("lr", {
        axes: [{ scale: "lr", format: fmt.learningRate }],
        series: [{ label: "Learning rate", color: COLORS.learningRate, format: fmt.learningRate }],
      }),
      gpu: chart("gpu", {
        axes: [
          { scale: "%", format: (v) => `${v}%`, range: [0, 100] },
          // From zero: memory barely moves during a run, and an auto range would magnify noise.
          { scale: "GB", format: (v) => `${fmt.tick(v)} GB`, range: (_c, _min, max) => [0, Math.max(1, max * 1.25)] },
        ],
        series: [
          { label: "Utilization", color: COLORS.gpu, format: fmt.percentage },
          {
            label: "Memory",
            color: COLORS.memory,
            axis: "GB",
            dashed: true,
            format: (v) => `${v.toFixed(1)} GB`,
          },
        ],
      }),
    };
  }

  render() {
    const { fields, job } = this;
    if (this.problem) this.#renderProblem();
    this.#renderConnection();
    if (!job) return;

    const status = job.status;
    fields.status.textContent = STATUS_LABELS[status] ?? status;
    fields.status.dataset.status = status;
    fields["info-status"].textContent = STATUS_LABELS[status] ?? status;
    this.root.querySelector('[data-action="cancel"]').hidden = !ACTIVE.has(status) || !!this.problem;
    fields["dialog-cost"].textContent = fmt.money(job.current_cost);
    const confirm = this.root.querySelector('[data-action="confirm-cancel"]');
    confirm.disabled = this.cancelling;
    confirm.textContent = this.cancelling ? "Cancelling…" : "Cancel job";

    const name = this.dataset?.name ?? "Training job";
    fields.title.textContent = name;
    if (this.setsDocumentTitle) {
      document.title = `${STATUS_LABELS[status] ?? status} · ${name} · Training monitor`;
    }
    const gpu = job.gpu_config ?? {};
    fields.subtitle.textContent = `${gpu.gpu_count ?? 1} × ${gpu.gpu_type ?? "GPU"}`;

    this.#renderProgress();
    this.#renderCards();
    this.#renderAlerts();
    this.#renderDetails();
    if (this.pointsChanged) this.#renderCharts();
    this.#renderClock();
  }

  #renderProblem() {
    const { status, message } = this.problem;
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
    this.fields["problem-title"].textContent = title;
    this.fields["problem-text"].textContent = text;
    this.fields.problem.hidden = false;
    this.fields.problem.dataset.status = String(status);
    this.fields.body.hidden = true;
    this.fields.status.textContent =
      { 401: "Signed out", 404: "Not found" }[status] ?? "Unavailable";
    this.fields.status.dataset.status = "problem";
    this.fields.title.textContent = this.dataset?.name ?? "Training job";
    this.root.querySelector('[data-action="cancel"]').hidden = true;
  }

  #renderConnection() {
    const lost = this.retryAt !== null && !this.problem;
    this.fields.connection.hidden = !lost;
    if (!lost) return;
    const seconds = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
    const reason =
      this.connectionError?.status > 0
        ? `The server answered ${this.connectionError.status}.`
        : "The server could not be reached.";
    const shown = this.job ? " The figures below may be out of date." : "";
    this.fields["connection-text"].textContent =
      `${reason}${shown} Retrying in ${seconds} s (attempt ${this.failures + 1}).`;
  }

  #renderProgress() {
    const { fields, job } = this;
    const progress = Math.max(0, Math.min(100, Number(job.progress ?? 0)));
    fields.percent.textContent = `${progress.toFixed(progress % 1 === 0 ? 0 : 1)}%`;
    fields.bar.setAttribute("aria-valuenow", String(progress));
    fields["bar-fill"].style.width = `${progress}%`;
    fields["bar-fill"].dataset.status = job.status;
    fields.epoch.textContent = `${job.current_epoch ?? 0} / ${job.total_epochs ?? "—"}`;
    fields.step.textContent = `${fmt.whole(job.current_step ?? 0)} / ${
      job.total_steps ? fmt.whole(job.total_steps) : "—"
    }`;
  }

  #renderCards() {
    const { fields, job, points } = this;
    const current = job.current_metrics ?? {};

    const train = latest(points, "training_loss");
    const trainValue = train?.training_loss ?? current.training_loss;
    fields["training-loss"].textContent = fmt.loss(trainValue);
    const start = first(points, "training_loss");
    fields["training-loss-note"].textContent =
      start && train && train.step !== start.step
        ? `${change(start.training_loss, train.training_loss)} since step ${start.step}`
        : trainValue == null
          ? "Waiting for the first step"
          : `At step ${train?.step ?? job.current_step}`;

    const validation = latest(points, "validation_loss");
    fields["validation-loss"].textContent = fmt.loss(
      validation?.validation_loss ?? current.validation_loss,
    );
    const best = lowest(points, "validation_loss");
    fields["validation-loss-note"].textContent = best
      ? `Best ${fmt.loss(best.validation_loss)} at step ${best.step}`
      : "After the first evaluation";

    const throughput = latest(points, "throughput")?.throughput ?? current.throughput;
    fields.throughput.textContent = fmt.whole(throughput);
    const average = mean(points, "throughput");
    fields["throughput-note"].textContent =
      average === null ? "Tokens processed per second" : `Average ${fmt.whole(average)} tokens/s`;

    if (this.terminal) {
      fields["cost-label"].textContent = "Final cost";
      fields.cost.textContent = fmt.money(job.final_cost ?? job.current_cost);
      fields["cost-note"].textContent =
        job.estimated_total_cost != null
          ? `Estimated before the run: ${fmt.money(job.estimated_total_cost)}`
          : "Billed for the compute used";
    } else {
      fields["cost-label"].textContent = "Cost so far";
      fields.cost.textContent = fmt.money(job.current_cost);
      fields["cost-note"].textContent =
        job.estimated_total_cost != null
          ? `Estimated total ${fmt.money(job.estimated_total_cost)}`
          : "Estimated total once running";
    }
  }

  #renderAlerts() {
    const { job } = this;
    const alerts = [];
    if (job.status === "completed") {
      const took = seconds(job.started_at, job.completed_at);
      alerts.push([
        "success",
        `Training finished${took === null ? "" : ` in ${fmt.duration(took)}`}. ` +
          `Final cost ${fmt.money(job.final_cost ?? job.current_cost)}.`,
      ]);
    } else if (job.status === "failed") {
      alerts.push(["error", `Training failed: ${job.error_message ?? "the cluster gave no reason."}`]);
    } else if (job.status === "cancelled") {
      const why = job.error_message
        ? `Training was stopped: ${job.error_message}.`
        : "Training was cancelled.";
      alerts.push(["neutral", `${why} Billed ${fmt.money(job.final_cost ?? job.current_cost)}.`]);
    } else if (this.#stalledFor() !== null) {
      alerts.push([
        "warning",
        `No progress for ${fmt.duration(this.#stalledFor())}: the run may be stalled. ` +
          "The runner keeps checking it and fails it if the cluster reports a problem.",
      ]);
    }
    const list = this.fields.alerts;
    list.replaceChildren(
      ...alerts.map(([kind, text]) => {
        const alert = document.createElement("p");
        alert.className = `lrm-alert lrm-alert-${kind}`;
        alert.dataset.kind = kind;
        alert.textContent = text;
        return alert;
      }),
    );
  }

  /** Seconds since the step counter last moved, when that is long enough to call a stall. */
  #stalledFor() {
    const { job } = this;
    if (job.status !== "running") return null;
    const lastMove = job.last_progress_at ?? latest(this.points, "step")?.recorded_at;
    if (!lastMove) return null;
    const idle = (Date.now() - new Date(lastMove).getTime()) / 1000;
    const ran = seconds(job.started_at, lastMove);
    const perStep = ran !== null && job.current_step > 0 ? ran / job.current_step : 0;
    return idle > Math.max(STALL_MIN_SECONDS, STALL_FACTOR * perStep) ? idle : null;
  }

  #renderDetails() {
    const { fields, job, dataset } = this;
    const table = fields.hyperparameters;
    const entries = Object.entries(job.hyperparameters ?? {});
    table.replaceChildren(
      ...(entries.length === 0 ? [["—", "defaults"]] : entries).map(([key, value]) => {
        const row = document.createElement("div");
        const term = document.createElement("dt");
        term.textContent = key;
        const detail = document.createElement("dd");
        detail.textContent = fmt.setting(value);
        row.append(term, detail);
        return row;
      }),
    );
    const gpu = job.gpu_config ?? {};
    fields["gpu-type"].textContent = gpu.gpu_type ?? "—";
    fields["gpu-count"].textContent = fmt.whole(gpu.gpu_count);
    fields["dataset-name"].textContent = dataset?.name ?? "—";
    fields["dataset-bucket"].textContent = dataset
      ? dataset.storage_bucket ?? "lora-datasets (default)"
      : "—";
    fields["dataset-path"].textContent = dataset?.storage_path ?? "—";
    fields["dataset-pairs"].textContent = fmt.whole(dataset?.total_training_pairs);

    fields["job-id"].textContent = job.id;
    fields["external-id"].textContent = job.external_job_id ?? "Not submitted yet";
    fields["dataset-id"].textContent = job.dataset_id ?? "—";
    fields["created-at"].textContent = fmt.timestamp(job.created_at);
    fields["started-at"].textContent = fmt.timestamp(job.started_at);
    fields["completed-at"].textContent = fmt.timestamp(job.completed_at);
    fields["updated-at"].textContent = fmt.timestamp(job.updated_at);
    fields["error-message"].textContent = job.error_message ?? "None";
  }

  #renderCharts() {
    this.pointsChanged = false;
    const { points } = this;
    this.fields["chart-empty"].hidden = points.length > 0;
    const rate = latest(points, "learning_rate");
    this.fields["lr-note"].textContent = rate
      ? `Now ${fmt.learningRate(rate.learning_rate)}`
      : "Schedule by step";
    const gpu = this.job.gpu_config ?? {};
    const usage = latest(points, "gpu_utilization");
    const memory = latest(points, "gpu_memory");
    this.fields["gpu-note"].textContent = [
      `${gpu.gpu_count ?? 1} × ${gpu.gpu_type ?? "GPU"}`,
      usage && `${fmt.percentage(usage.gpu_utilization)} busy`,
      memory && `${memory.gpu_memory.toFixed(1)} GB in use`,
    ]
      .filter(Boolean)
      .join(" · ");
    this.charts.loss.update(columns(points, ["training_loss", "validation_loss"]));
    this.charts.lr.update(columns(points, ["learning_rate"]));
    this.charts.gpu.update(columns(points, ["gpu_utilization", "gpu_memory"]));
  }

  /** What changes with the clock alone: elapsed time, ETA, "updated … ago", the retry countdown. */
  #renderClock() {
    const { fields, job } = this;
    this.#renderConnection();
    if (!job) return;
    const now = Date.now();
    const end = this.terminal ? job.completed_at : now;
    fields.elapsed.textContent = job.started_at
      ? fmt.duration(seconds(job.started_at, end))
      : "Not started";
    if (this.terminal) {
      fields["eta-label"].textContent = "Finished";
      fields.eta.textContent = fmt.timestamp(job.completed_at);
    } else if (job.estimated_completion_at) {
      fields["eta-label"].textContent = "Estimated completion";
      fields.eta.textContent = `${fmt.timeOfDay(job.estimated_completion_at)} (${fmt.fromNow(
        job.estimated_completion_at,
        now,
      )})`;
    } else {
      fields["eta-label"].textContent = "Estimated completion";
      fields.eta.textContent = job.status === "running" ? "Estimating…" : "After it starts";
    }
    if (this.problem) {
      fields.freshness.textContent = "";
    } else if (this.terminal) {
      fields.freshness.textContent = "Final state, no longer updating";
    } else if (this.updatedAt) {
      const ago = fmt.fromNow(this.updatedAt, now);
      fields.freshness.textContent =
        this.retryAt === null ? `Live · updated ${ago}` : `Last updated ${ago}`;
    }
  }
}

function seconds(from, to) {
  if (!from || !to) return null;
  return (new Date(to).getTime() - new Date(from).getTime()) / 1000;
}

function change(from, to) {
  if (!from) return "";
  const ratio = ((to - from) / from) * 100;
  const sign = ratio > 0 ? "+" : ratio < 0 ? "−" : "±";
  return `${sign}${Math.abs(ratio).toFixed(1)}%`;
}
