// The Metrics & Charts tab: loss, learning rate, and GPU utilization and memory, by step.

import { lineChart } from "./charts.js";
import * as fmt from "./format.js";
import { columns, latest } from "./series.js";

const COLORS = {
  training: "#4f46e5",
  validation: "#e8590c",
  learningRate: "#0f766e",
  gpu: "#7c3aed",
  memory: "#94a3b8",
};

/** The three charts in `view`; `render(state)` redraws them when new points have arrived. */
export function createMetricCharts(view) {
  const chart = (name, spec) =>
    lineChart(view.root.querySelector(`[data-chart="${name}"]`), spec);
  const charts = {
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
        {
          scale: "GB",
          format: (v) => `${fmt.tick(v)} GB`,
          range: (_c, _min, max) => [0, Math.max(1, max * 1.25)],
        },
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

  return {
    render(state) {
      if (!state.pointsChanged) return;
      state.pointsChanged = false;
      const { fields } = view;
      const { points } = state;
      fields["chart-empty"].hidden = points.length > 0;
      const rate = latest(points, "learning_rate");
      fields["lr-note"].textContent = rate
        ? `Now ${fmt.learningRate(rate.learning_rate)}`
        : "Schedule by step";
      const gpu = state.job.gpu_config ?? {};
      const usage = latest(points, "gpu_utilization");
      const memory = latest(points, "gpu_memory");
      fields["gpu-note"].textContent = [
        `${gpu.gpu_count ?? 1} × ${gpu.gpu_type ?? "GPU"}`,
        usage && `${fmt.percentage(usage.gpu_utilization)} busy`,
        memory && `${memory.gpu_memory.toFixed(1)} GB in use`,
      ]
        .filter(Boolean)
        .join(" · ");
      charts.loss.update(columns(points, ["training_loss", "validation_loss"]));
      charts.lr.update(columns(points, ["learning_rate"]));
      charts.gpu.update(columns(points, ["gpu_utilization", "gpu_memory"]));
    },
    destroy() {
      for (const each of Object.values(charts)) each.destroy();
    },
  };
}
