/**
 * What the charts draw, shaped from what the server and the kernel send: every rank's
 * `burst.log(step=..., name=value)` points as a curve per metric and rank, and a job's cost
 * over time. Pure functions (no DOM, no uPlot instance), so that the unit tests run them;
 * chart.tsx draws their columns.
 */

import { toMicros } from './model';

/** One `burst.log` value, as `GET jobs/<id>/metrics` sends it. */
export interface IMetricPoint {
  ts: number;
  rank: number;
  /** The step the rank gave, or null (then the point's place in its rank's curve). */
  step: number | null;
  name: string;
  value: number;
}

/** An answer of `GET jobs/<id>/metrics?since=<cursor>`. */
export interface IMetricsPage {
  job: string;
  status: string;
  points: IMetricPoint[];
  /** The cursor to ask from next time. */
  next: number;
  /** Whether more points wait after `next` (the page was full). */
  more: boolean;
}

/**
 * Curves by metric, then by rank (a string, as JSON keys are): `[step, value]` pairs in the
 * order they came. The same shape as the kernel's `application/vnd.jupyter-burst.metrics+json`
 * display (`metrics`), so the sidebar and the chart under the cell draw through one path.
 */
export type Curves = Record<string, Record<string, [number, number][]>>;

/** The kernel's display under a `%%burst` cell (jupyter_burst/kernel/metrics_chart.py). */
export interface IMetricsBundle {
  job: string | null;
  metrics: Curves;
}

export const METRICS_MIME_TYPE = 'application/vnd.jupyter-burst.metrics+json';

/**
 * `curves` with `points` appended (a new object; the curves that changed are new arrays,
 * so React sees them change). A point without a step takes its place in its curve.
 */
export function addPoints(
  curves: Readonly<Curves>,
  points: readonly IMetricPoint[]
): Curves {
  const out: Curves = { ...curves };
  const copied = new Set<string>();
  for (const point of points) {
    if (typeof point.value !== 'number' || !Number.isFinite(point.value)) {
      continue;
    }
    const rank = String(point.rank);
    const key = `${point.name}\u0000${rank}`;
    if (!copied.has(key)) {
      copied.add(key);
      const byRank = { ...(out[point.name] ?? {}) };
      byRank[rank] = [...(byRank[rank] ?? [])];
      out[point.name] = byRank;
    }
    const curve = out[point.name][rank];
    const step = point.step ?? curve.length;
    curve.push([step, point.value]);
  }
  return out;
}

/** The ranks of a metric's curves in rank order ("0", "1", ..., "10"). */
export function sortedRanks(
  byRank: Readonly<Record<string, unknown>>
): string[] {
  return Object.keys(byRank).sort(
    (a, b) => Number(a) - Number(b) || a.localeCompare(b)
  );
}

/**
 * uPlot's data: one x column (every step of every rank, ascending, each once) and a y
 * column per series aligned on it, `null` where a series has no value at that x. A series
 * that gave the same x twice keeps its last value there.
 */
export type Columns = [number[], ...(number | null)[][]];

export function alignColumns(
  series: readonly (readonly [number, number][])[]
): Columns {
  const xs = [...new Set(series.flatMap(s => s.map(([x]) => x)))].sort(
    (a, b) => a - b
  );
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map(s => {
    const column: (number | null)[] = new Array(xs.length).fill(null);
    for (const [x, y] of s) {
      column[index.get(x)!] = y;
    }
    return column;
  });
  return [xs, ...ys];
}

/** A chart's series: what its legend says and how many points each has. */
export interface ISeries {
  label: string;
  points: number;
  /** Its newest value (in the order the points came), or null. */
  last: number | null;
}

/** One metric as a chart: a series per rank over steps. */
export interface IChartData {
  name: string;
  series: ISeries[];
  columns: Columns;
}

/** A metric's curves as a chart's data: a series per rank, in rank order. */
export function metricChart(
  name: string,
  byRank: Readonly<Record<string, [number, number][]>>
): IChartData {
  const ranks = sortedRanks(byRank);
  const curves = ranks.map(rank => byRank[rank]);
  return {
    name,
    series: ranks.map((rank, i) => ({
      label: `rank ${rank}`,
      points: curves[i].length,
      last: curves[i].length ? curves[i][curves[i].length - 1][1] : null
    })),
    columns: alignColumns(curves)
  };
}

/** Every metric as a chart, in the order the metrics were first logged. */
export function metricCharts(curves: Readonly<Curves>): IChartData[] {
  return Object.entries(curves).map(([name, byRank]) =>
    metricChart(name, byRank)
  );
}

// Cost over time --------------------------------------------------------------------------

/** A job's cost as the jobs poll saw it: seconds since the job started, and dollars. */
export type CostSample = [seconds: number, dollars: number];

/** The most cost samples kept per job: hours of a 3 s poll, thinned beyond. */
export const COST_SAMPLES_KEPT = 2000;

/**
 * `samples` with the job's cost `exact` (an exact decimal string) at `seconds` after its
 * start appended, unless it says nothing new (the same time as the last sample). Past
 * `kept` samples every other older one goes, so that a long job's curve keeps its shape.
 */
export function addCostSample(
  samples: readonly CostSample[],
  seconds: number,
  exact: string,
  kept: number = COST_SAMPLES_KEPT
): CostSample[] {
  const last = samples[samples.length - 1];
  if (last && seconds <= last[0]) {
    return samples as CostSample[];
  }
  const dollars = Number(toMicros(exact)) / 1_000_000;
  let out = [...samples, [seconds, dollars] as CostSample];
  if (out.length > kept) {
    out = out.filter((_, i) => i % 2 === 0 || i === out.length - 1);
  }
  return out;
}

/** A job's cost samples as a chart `name` of one series, `label`. */
export function costChart(
  name: string,
  samples: readonly CostSample[],
  label: string = name
): IChartData {
  return {
    name,
    series: [
      {
        label,
        points: samples.length,
        last: samples.length ? samples[samples.length - 1][1] : null
      }
    ],
    columns: [samples.map(([s]) => s), samples.map(([, d]) => d)]
  };
}
