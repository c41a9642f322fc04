// The monitor's markup, filled in by the renderers through its `data-field` elements. Nothing
// from the server or the user is ever put in as HTML: the renderers set text only.

let instances = 0;

const template = (id) => `
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
      <section class="lrm-card lrm-queue" data-field="queue" aria-labelledby="${id}-queue-title"
               hidden>
        <div class="lrm-queue-place">
          <h2 class="lrm-label" id="${id}-queue-title">Waiting to start</h2>
          <p class="lrm-queue-position" data-field="queue-position" aria-live="polite"></p>
        </div>
        <div class="lrm-queue-why">
          <p class="lrm-queue-message" data-field="queue-message"></p>
          <p class="lrm-queue-hint" data-field="queue-hint"></p>
        </div>
        <dl class="lrm-facts lrm-queue-facts">
          <div><dt>Estimated start</dt><dd data-field="queue-start">—</dd></div>
        </dl>
      </section>

      <section class="lrm-card lrm-adapter" data-field="adapter"
               aria-labelledby="${id}-adapter-title" hidden>
        <div class="lrm-adapter-head">
          <div>
            <h2 id="${id}-adapter-title">Trained adapter</h2>
            <p class="lrm-adapter-note">
              The LoRA adapter this run produced, as PEFT saves it. Download links are signed
              afresh on each download and last 15 minutes.
            </p>
          </div>
          <button type="button" class="lrm-button lrm-button-primary" data-action="download-adapter">
            Download adapter
          </button>
        </div>
        <ul class="lrm-files" data-field="adapter-files"></ul>
        <p class="lrm-adapter-status" data-field="adapter-status" role="status"></p>
      </section>

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
            <div><dt>Cluster run started</dt><dd data-field="run-started-at">—</dd></div>
            <div><dt>Cluster run ended</dt><dd data-field="run-ended-at">—</dd></div>
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
 * Puts the monitor's markup into `element`. Returns the view the other modules work on: the
 * root, its `data-field` elements by name, and `action(name)` for its `data-action` buttons.
 */
export function createView(element) {
  element.classList.add("lrm");
  // Ids unique on the page, for the tabs' and the dialog's ARIA references.
  element.innerHTML = template(`lrm${(instances += 1)}`);
  const fields = Object.fromEntries(
    [...element.querySelectorAll("[data-field]")].map((node) => [node.dataset.field, node]),
  );
  const action = (name) => element.querySelector(`[data-action="${name}"]`);
  return { root: element, fields, action };
}
