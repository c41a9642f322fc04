// The top of the page: the header, the progress bar with its facts, and the four metric cards.

import * as fmt from "./format.js";
import { isTerminal, secondsBetween, statusLabel } from "./state.js";
import { first, latest, lowest, mean } from "./series.js";

/** The dataset's name, the GPUs and the status badge (and the tab's title on a page of its own). */
export function renderHeader(view, state, { documentTitle }) {
  const { fields } = view;
  const { job } = state;
  fields.status.textContent = statusLabel(job.status);
  fields.status.dataset.status = job.status;
  const name = state.dataset?.name ?? "Training job";
  fields.title.textContent = name;
  if (documentTitle) document.title = `${statusLabel(job.status)} · ${name} · Training monitor`;
  const gpu = job.gpu_config ?? {};
  fields.subtitle.textContent = `${gpu.gpu_count ?? 1} × ${gpu.gpu_type ?? "GPU"}`;
}

export function renderProgress(view, state) {
  const { fields } = view;
  const { job } = state;
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

/** Training and validation loss, throughput, and the cost: so far, or final once ended. */
export function renderCards(view, state) {
  const { fields } = view;
  const { job, points } = state;
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

  if (isTerminal(state)) {
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

/** What changes with the clock alone: elapsed time, ETA and "updated … ago". */
export function renderTimes(view, state, now) {
  const { fields } = view;
  const { job } = state;
  const terminal = isTerminal(state);
  const end = terminal ? job.completed_at : now;
  fields.elapsed.textContent = job.started_at
    ? fmt.duration(secondsBetween(job.started_at, end))
    : "Not started";
  if (terminal) {
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
  if (state.problem) {
    fields.freshness.textContent = "";
  } else if (terminal) {
    fields.freshness.textContent = "Final state, no longer updating";
  } else if (state.updatedAt) {
    const ago = fmt.fromNow(state.updatedAt, now);
    fields.freshness.textContent =
      state.retryAt === null ? `Live · updated ${ago}` : `Last updated ${ago}`;
  }
}

function change(from, to) {
  if (!from) return "";
  const ratio = ((to - from) / from) * 100;
  const sign = ratio > 0 ? "+" : ratio < 0 ? "−" : "±";
  return `${sign}${Math.abs(ratio).toFixed(1)}%`;
}
