// The Cancel job button and the dialog that confirms it, naming the cost billed so far.

import { ApiError } from "./api.js";
import * as fmt from "./format.js";
import { ACTIVE } from "./state.js";

/**
 * Wires the button and the dialog. A confirmed cancel updates `state.job` and stops the poller;
 * a job that ended meanwhile (409) is polled once more to show how; a refusal ends the monitor.
 */
export function bindCancelDialog(view, { api, jobId, state, poller, render }) {
  const { fields, action } = view;
  const dialog = fields.dialog;
  const error = fields["dialog-error"];

  action("cancel").addEventListener("click", () => {
    error.hidden = true;
    dialog.showModal();
  });
  action("keep").addEventListener("click", () => dialog.close());
  action("confirm-cancel").addEventListener("click", () => confirm());
  dialog.addEventListener("cancel", (event) => {
    if (state.cancelling) event.preventDefault();
  });

  async function confirm() {
    if (state.cancelling) return;
    state.cancelling = true;
    error.hidden = true;
    render();
    try {
      const job = await api.cancelJob(jobId);
      state.job = { ...state.job, ...job };
      dialog.close();
      poller.stop();
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 409) {
        // It finished on its own meanwhile: show how it ended.
        dialog.close();
        poller.pollNow();
      } else if (failure instanceof ApiError && (failure.status === 401 || failure.status === 404)) {
        dialog.close();
        state.problem = failure;
        poller.stop();
      } else {
        error.textContent = `The job could not be cancelled: ${failure.message} Try again in a moment.`;
        error.hidden = false;
      }
    } finally {
      state.cancelling = false;
      render();
    }
  }
}

/** The button shows while the job can be cancelled; the dialog names the cost so far. */
export function renderCancel(view, state) {
  const { job } = state;
  view.action("cancel").hidden = !ACTIVE.has(job.status) || !!state.problem;
  view.fields["dialog-cost"].textContent = fmt.money(job.current_cost);
  const confirm = view.action("confirm-cancel");
  confirm.disabled = state.cancelling;
  confirm.textContent = state.cancelling ? "Cancelling…" : "Cancel job";
}
