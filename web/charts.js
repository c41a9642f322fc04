// Line charts over training steps, drawn by uPlot and sized to their container.

import uPlot from "uplot";

const AXIS = {
  stroke: "#5b6474",
  font: "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
  grid: { stroke: "#eef0f4", width: 1 },
  ticks: { stroke: "#eef0f4", width: 1 },
};

const HEIGHT = 240;

// Steps are whole numbers: tick at 1, 2, 5, 10, 20, 50... never at 2.5.
const STEP_INCREMENTS = Array.from({ length: 8 }, (_, power) =>
  [1, 2, 5].map((factor) => factor * 10 ** power),
).flat();

/**
 * A chart of `series` (each `{label, color, axis?, dashed?, points?, format}`) against the step,
 * in `container`. `axes` describes the y axes: `[{scale, format, range?}]` (`range` as uPlot
 * takes it: `[min, max]` or a function); the first is on the left, a second on the right.
 * Returns `{update(columns), destroy()}`.
 */
export function lineChart(container, { series, axes }) {
  const options = {
    width: Math.max(container.clientWidth, 200),
    height: HEIGHT,
    legend: { live: true },
    cursor: { drag: { x: true, y: false }, focus: { prox: 24 } },
    scales: {
      x: { time: false },
      ...Object.fromEntries(
        axes.map((axis) => [axis.scale, axis.range ? { range: axis.range } : { auto: true }]),
      ),
    },
    axes: [
      {
        ...AXIS,
        label: "Step",
        labelSize: 18,
        labelFont: AXIS.font,
        incrs: STEP_INCREMENTS,
        values: (_chart, ticks) => ticks.map((tick) => tick.toLocaleString()),
      },
      ...axes.map((axis, index) => ({
        ...AXIS,
        scale: axis.scale,
        side: index === 0 ? 3 : 1,
        grid: index === 0 ? AXIS.grid : { show: false },
        size: 60,
        values: (_chart, ticks) => ticks.map(axis.format),
      })),
    ],
    series: [
      { label: "Step", value: (_chart, value) => (value == null ? "" : String(value)) },
      ...series.map((line) => ({
        label: line.label,
        scale: line.axis ?? axes[0].scale,
        stroke: line.color,
        width: 2,
        dash: line.dashed ? [6, 4] : undefined,
        // Validation runs only now and then: join its points instead of leaving gaps.
        spanGaps: true,
        points: { show: line.points ?? false, size: 6, fill: line.color },
        // Values show while the pointer is on a step; no value at that step reads as a dash.
        value: (_chart, value, _series, index) =>
          index == null ? "" : value == null ? "—" : line.format(value),
      })),
    ],
  };
  const chart = new uPlot(options, [[], ...series.map(() => [])], container);

  // Charts in a hidden tab have no width; they resize when they are shown, or the page is.
  const observer = new ResizeObserver(() => {
    const width = container.clientWidth;
    if (width > 0 && width !== chart.width) chart.setSize({ width, height: HEIGHT });
  });
  observer.observe(container);

  return {
    update(columns) {
      chart.setData(columns);
      // How many steps the chart holds, readable from outside (the browser tests check it).
      container.dataset.points = String(columns[0].length);
    },
    destroy() {
      observer.disconnect();
      chart.destroy();
    },
  };
}
