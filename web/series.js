// The metrics series as the page keeps it: points sorted by step, merged poll after poll.

/**
 * `points` with `incoming` merged in, sorted by step; a step already present takes the newer
 * values. Each poll asks only for steps after the last one seen, so the usual case is an append.
 */
export function mergePoints(points, incoming) {
  if (incoming.length === 0) return points;
  const sorted = [...incoming].sort((a, b) => a.step - b.step);
  const last = points.at(-1);
  if (last === undefined || sorted[0].step > last.step) return points.concat(sorted);
  const byStep = new Map(points.map((point) => [point.step, point]));
  for (const point of sorted) byStep.set(point.step, point);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/** The largest step in the series, or null before the first point. */
export function lastStep(points) {
  return points.length === 0 ? null : points.at(-1).step;
}

/** uPlot's column layout: the steps, then one array per field (null where a point lacks it). */
export function columns(points, fields) {
  return [
    points.map((point) => point.step),
    ...fields.map((field) => points.map((point) => point[field] ?? null)),
  ];
}

/** The last point that has a value for `field`, or undefined. */
export function latest(points, field) {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i][field] != null) return points[i];
  }
  return undefined;
}

/** The first point that has a value for `field`, or undefined. */
export function first(points, field) {
  return points.find((point) => point[field] != null);
}

/** The point with the smallest value of `field`, or undefined. */
export function lowest(points, field) {
  let best;
  for (const point of points) {
    if (point[field] != null && (best === undefined || point[field] < best[field])) best = point;
  }
  return best;
}

/** The mean of `field` over the points that have it, or null. */
export function mean(points, field) {
  const values = points.map((point) => point[field]).filter((value) => value != null);
  if (values.length === 0) return null;
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}
