import { describe, expect, it } from 'vitest';

import {
  addCostSample,
  addPoints,
  alignColumns,
  costChart,
  IMetricPoint,
  metricChart,
  metricCharts,
  sortedRanks
} from '../metrics';

function point(
  rank: number,
  step: number | null,
  value: number,
  name = 'loss'
): IMetricPoint {
  return { ts: 0, rank, step, name, value };
}

describe('metrics points as curves', () => {
  it('puts each point on its metric and rank, in the order they came', () => {
    const curves = addPoints({}, [
      point(0, 0, 1.0),
      point(1, 0, 1.1),
      point(0, 1, 0.5),
      point(0, 1, 0.9, 'accuracy')
    ]);
    expect(curves).toEqual({
      loss: {
        '0': [
          [0, 1.0],
          [1, 0.5]
        ],
        '1': [[0, 1.1]]
      },
      accuracy: { '0': [[1, 0.9]] }
    });
  });

  it('returns new objects where points arrived and keeps the rest as they were', () => {
    const before = addPoints({}, [point(0, 0, 1), point(0, 0, 2, 'lr')]);
    const after = addPoints(before, [point(0, 1, 0.5)]);
    expect(after).not.toBe(before);
    expect(after.loss).not.toBe(before.loss);
    expect(after.lr).toBe(before.lr);
    expect(before.loss['0']).toHaveLength(1); // the old curves are not changed
    expect(after.loss['0']).toHaveLength(2);
  });

  it('places a point without a step after its curve, and skips what is not a number', () => {
    const curves = addPoints({}, [
      point(0, null, 3),
      point(0, null, 2),
      { ...point(0, 5, 0), value: NaN },
      { ...point(0, 6, 0), value: 'x' as unknown as number }
    ]);
    expect(curves.loss['0']).toEqual([
      [0, 3],
      [1, 2]
    ]);
  });

  it('orders ranks as numbers', () => {
    expect(sortedRanks({ '10': 1, '2': 1, '0': 1 })).toEqual(['0', '2', '10']);
  });
});

describe("uPlot's columns", () => {
  it('aligns every series on the union of their steps, null where one has none', () => {
    expect(
      alignColumns([
        [
          [0, 1],
          [2, 3]
        ],
        [
          [1, 10],
          [2, 30]
        ]
      ])
    ).toEqual([
      [0, 1, 2],
      [1, null, 3],
      [null, 10, 30]
    ]);
  });

  it('sorts steps that came out of order, the last value at a step winning', () => {
    expect(
      alignColumns([
        [
          [5, 1],
          [1, 2],
          [5, 3]
        ]
      ])
    ).toEqual([
      [1, 5],
      [2, 3]
    ]);
  });

  it('makes a chart per metric with a series per rank, its count and newest value', () => {
    const curves = addPoints(
      {},
      [0, 1, 2].flatMap(step => [
        point(1, step, 2 - step),
        point(0, step, 1 / (step + 1))
      ])
    );
    const [chart] = metricCharts(curves);
    expect(chart.name).toBe('loss');
    expect(chart.series).toEqual([
      { label: 'rank 0', points: 3, last: 1 / 3 },
      { label: 'rank 1', points: 3, last: 0 }
    ]);
    expect(chart.columns).toEqual([
      [0, 1, 2],
      [1, 0.5, 1 / 3],
      [2, 1, 0]
    ]);
    expect(metricChart('empty', {}).columns).toEqual([[]]);
  });
});

describe('cost over time', () => {
  it('adds a sample only when time moved, in dollars', () => {
    let samples = addCostSample([], 1.5, '0.015');
    samples = addCostSample(samples, 1.5, '0.02');
    samples = addCostSample(samples, 4.5, '0.045');
    expect(samples).toEqual([
      [1.5, 0.015],
      [4.5, 0.045]
    ]);
    const chart = costChart('cost', samples);
    expect(chart.series).toEqual([{ label: 'cost', points: 2, last: 0.045 }]);
    expect(chart.columns).toEqual([
      [1.5, 4.5],
      [0.015, 0.045]
    ]);
  });

  it('thins older samples past the most it keeps, keeping the newest', () => {
    let samples = addCostSample([], 0, '0');
    for (let s = 1; s <= 10; s++) {
      samples = addCostSample(samples, s, String(s), 8);
    }
    expect(samples.length).toBeLessThanOrEqual(8);
    expect(samples[0]).toEqual([0, 0]);
    expect(samples[samples.length - 1]).toEqual([10, 10]);
  });
});
