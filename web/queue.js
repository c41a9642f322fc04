// A queued job's place in line, as get-job's `queue` says it: the position on its GPU type in the
// claim's round-robin order, why it waits, and when it may start. Shown only while the job is
// queued: it goes away with the poll that finds the job claimed.

import * as fmt from "./format.js";

// What ends each kind of wait, in the user's terms (README, "Many users, few GPUs").
const HINTS = {
  user_limit: "It starts when one of your running jobs ends.",
  gpu_capacity: "It starts when one of them frees up.",
  in_line: "Jobs take turns across users; it starts when its turn comes.",
};

export function renderQueue(view, state, now) {
  const { fields } = view;
  const { queue } = state;
  const shown = state.job?.status === "queued" && queue != null && !state.problem;
  fields.queue.hidden = !shown;
  if (!shown) return;
  fields.queue.dataset.reason = queue.reason;
  setText(fields["queue-position"], `#${queue.position} in line`);
  setText(fields["queue-message"], queue.message);
  setText(fields["queue-hint"], HINTS[queue.reason] ?? "");
  setText(fields["queue-start"], estimatedStart(queue.estimated_start_at, now));
}

/** "14:05 (in 12 minutes)"; an estimate already passed reads as any moment now. */
function estimatedStart(at, now) {
  if (!at) return "Not known yet";
  if (new Date(at).getTime() <= now) return `Any moment now (estimated ${fmt.timeOfDay(at)})`;
  return `${fmt.timeOfDay(at)} (${fmt.fromNow(at, now)})`;
}

// The position is a live region: write it only when it changes, not on every clock tick.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
