/**
 * The one chart component of the extension: a line chart of a few series over a shared x
 * (steps, or seconds), drawn with uPlot, with a legend of our own that says each series'
 * points and newest value. The sidebar's metrics and cost charts and the chart under a
 * `%%burst` cell all draw through it.
 *
 * Why uPlot: it is small (about 50 KB minified, no dependencies), draws on a canvas, so tens
 * of thousands of points per curve stay fast, and takes new data with `setData` without
 * rebuilding the chart, which suits curves that grow every couple of seconds while a job
 * runs; it is maintained (regular releases) and MIT-licensed. Larger libraries (Plotly,
 * ECharts, Chart.js) bring far more weight, or SVG that slows with many points, for what is
 * here a handful of line charts.
 *
 * Without a canvas (jsdom in the unit tests, a browser that refuses one) nothing is drawn,
 * the legend still says what there is, and nothing throws.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import uPlot from 'uplot';

import { Curves, IChartData, metricCharts } from './metrics';

/** A series' colour, by its place: rank 0 first (distinct on light and dark themes). */
export const SERIES_COLOURS = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf'
];

export function seriesColour(index: number): string {
  return SERIES_COLOURS[index % SERIES_COLOURS.length];
}

let canvasWorks: boolean | null = null;

/** Whether this page can draw on a canvas (asked once). */
export function canDraw(): boolean {
  if (canvasWorks === null) {
    try {
      canvasWorks = document.createElement('canvas').getContext('2d') !== null;
    } catch {
      canvasWorks = false;
    }
  }
  return canvasWorks;
}

/** "0.1235", "12.35", "1.235e+6": a value short enough for a legend. */
export function formatValue(value: number): string {
  if (value === 0 || !Number.isFinite(value)) {
    return String(value);
  }
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6 || magnitude < 1e-4) {
    return value.toExponential(3);
  }
  return String(Number(value.toPrecision(4)));
}

export interface IChartProps {
  chart: IChartData;
  /** What the x axis counts ("step", "seconds"). */
  xLabel: string;
  /** A value as the legend and the y axis show it. */
  format?: (value: number) => string;
  /** The plot's height in pixels (its width follows its container). */
  height?: number;
  /** The y axis starts at zero (a total, such as a cost), not at the lowest value. */
  fromZero?: boolean;
  trans: TranslationBundle;
}

const DEFAULT_HEIGHT = 140;
const FALLBACK_WIDTH = 260;

/** A theme colour (a JupyterLab CSS variable) as the canvas needs it: a plain colour. */
function themeColour(element: Element, variable: string, fallback: string) {
  const value = getComputedStyle(element).getPropertyValue(variable).trim();
  return value || fallback;
}

function plotOptions(
  host: HTMLElement,
  props: IChartProps,
  width: number
): uPlot.Options {
  const { chart, xLabel, format } = props;
  const text = themeColour(host, '--jp-ui-font-color2', '#616161');
  const grid = themeColour(host, '--jp-border-color2', '#e0e0e0');
  const axis: uPlot.Axis = {
    stroke: text,
    grid: { stroke: grid, width: 1 },
    ticks: { stroke: grid, width: 1 },
    font: '10px sans-serif',
    labelFont: '10px sans-serif'
  };
  return {
    width,
    height: props.height ?? DEFAULT_HEIGHT,
    scales: {
      // One step alone is drawn around it, not on a 0..100 axis.
      x: {
        time: false,
        range: (plot, min, max) => {
          const xs = plot.data[0];
          return xs.length === 1 ? [xs[0] - 1, xs[0] + 1] : [min, max];
        }
      },
      ...(props.fromZero
        ? {
            y: {
              range: (_plot: uPlot, _min: number, max: number) =>
                [0, max > 0 ? max * 1.1 : 1] as uPlot.Range.MinMax
            }
          }
        : {})
    },
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    series: [
      { label: xLabel },
      ...chart.series.map((series, index) => ({
        label: series.label,
        stroke: seriesColour(index),
        width: 1.5,
        spanGaps: true // a rank that skipped a step is still one curve
      }))
    ],
    axes: [
      { ...axis, label: xLabel, labelSize: 14, size: 28 },
      {
        ...axis,
        size: 48,
        values: format
          ? (_plot: uPlot, ticks: number[]) => ticks.map(format)
          : undefined
      }
    ]
  };
}

/**
 * A line chart of `chart`'s series. Its root carries what the browser tests read, since a
 * canvas cannot be: `data-series` (the labels) and `data-points` (each series' count);
 * each legend entry has its series' `data-points` and newest value, `data-last`.
 */
export function Chart(props: IChartProps): JSX.Element {
  const { chart, trans } = props;
  const format = props.format ?? formatValue;
  const host = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  const [drawn, setDrawn] = React.useState(false);
  const labels = chart.series.map(s => s.label).join(',');
  const latest = React.useRef(props);
  latest.current = props;

  // A chart per set of series; new points go in with setData below.
  React.useEffect(() => {
    const element = host.current;
    if (!element || !canDraw()) {
      return;
    }
    let made: uPlot;
    try {
      made = new uPlot(
        plotOptions(
          element,
          latest.current,
          element.clientWidth || FALLBACK_WIDTH
        ),
        latest.current.chart.columns as uPlot.AlignedData,
        element
      );
    } catch {
      return; // nothing drawn; the legend still tells
    }
    plot.current = made;
    setDrawn(true);
    const observer =
      typeof ResizeObserver === 'undefined'
        ? null
        : new ResizeObserver(() => {
            const width = element.clientWidth;
            if (width > 0 && width !== made.width) {
              made.setSize({ width, height: made.height });
            }
          });
    observer?.observe(element);
    return () => {
      observer?.disconnect();
      made.destroy();
      plot.current = null;
      setDrawn(false);
    };
  }, [labels, props.height, props.xLabel, props.fromZero]);

  React.useEffect(() => {
    plot.current?.setData(chart.columns as uPlot.AlignedData);
  }, [chart.columns]);

  return (
    <figure
      className="jp-BurstChart"
      data-name={chart.name}
      data-series={labels}
      data-points={chart.series.map(s => s.points).join(',')}
      data-drawn={drawn ? 'true' : 'false'}
    >
      <figcaption className="jp-BurstChart-title">{chart.name}</figcaption>
      <div
        className="jp-BurstChart-plot"
        ref={host}
        role="img"
        aria-label={trans.__('Chart of %1 over %2', chart.name, props.xLabel)}
      />
      <ul className="jp-BurstChart-legend">
        {chart.series.map((series, index) => (
          <li
            key={series.label}
            className="jp-BurstChart-series"
            data-series={series.label}
            data-points={series.points}
            data-last={series.last ?? ''}
          >
            <span
              className="jp-BurstChart-swatch"
              style={{ background: seriesColour(index) }}
            />
            {series.label}
            {series.last !== null && (
              <span className="jp-BurstChart-last"> {format(series.last)}</span>
            )}
          </li>
        ))}
      </ul>
    </figure>
  );
}

/** Every metric of `curves` as a chart: a curve per rank over steps. */
export function MetricsCharts(props: {
  curves: Readonly<Curves>;
  trans: TranslationBundle;
}): JSX.Element {
  const { curves, trans } = props;
  // Shaped again only when the curves change (the sidebar re-renders every second).
  const charts = React.useMemo(() => metricCharts(curves), [curves]);
  return (
    <div className="jp-BurstCharts">
      {charts.map(chart => (
        <Chart
          key={chart.name}
          chart={chart}
          xLabel={trans.__('step')}
          trans={trans}
        />
      ))}
    </div>
  );
}
