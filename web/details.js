// The Configuration and Job Info tabs, and the tab list that switches between the three panels.

import * as fmt from "./format.js";
import { statusLabel } from "./state.js";

export function renderDetails(view, state) {
  const { fields } = view;
  const { job, dataset } = state;
  const entries = Object.entries(job.hyperparameters ?? {});
  fields.hyperparameters.replaceChildren(
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
  fields["info-status"].textContent = statusLabel(job.status);
  fields["created-at"].textContent = fmt.timestamp(job.created_at);
  fields["started-at"].textContent = fmt.timestamp(job.started_at);
  fields["completed-at"].textContent = fmt.timestamp(job.completed_at);
  fields["run-started-at"].textContent = fmt.timestamp(job.run_started_at);
  fields["run-ended-at"].textContent = fmt.timestamp(job.run_ended_at);
  fields["updated-at"].textContent = fmt.timestamp(job.updated_at);
  fields["error-message"].textContent = job.error_message ?? "None";
}

/** Tabs as WAI-ARIA describes them: click to select, arrow keys to move along. */
export function bindTabs(view) {
  const { root } = view;
  const tabs = [...root.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      root.querySelector(`[data-panel="${other.dataset.tab}"]`).hidden = !selected;
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
