import { nullTranslator } from '@jupyterlab/translation';
import { cleanup, render } from '@testing-library/react';
import * as React from 'react';
import { afterEach, describe, expect, it } from 'vitest';

import { Chart, formatValue, MetricsCharts, seriesColour } from '../chart';
import { addPoints, metricChart } from '../metrics';
import { METRICS_MIME_TYPE } from '../metrics';
import { MetricsRenderer, metricsRendererFactory } from '../mimerender';

afterEach(cleanup);

const trans = nullTranslator.load('jupyter_burst');

describe('the chart component', () => {
  it('says its series and their points without a canvas, and does not throw', () => {
    const chart = metricChart('loss', {
      '1': [[0, 2]],
      '0': [
        [0, 1],
        [1, 0.5]
      ]
    });
    const { container } = render(
      <Chart chart={chart} xLabel="step" trans={trans} />
    );
    const figure = container.querySelector('.jp-BurstChart')!;
    expect(figure.getAttribute('data-series')).toBe('rank 0,rank 1');
    expect(figure.getAttribute('data-points')).toBe('2,1');
    expect(figure.getAttribute('data-drawn')).toBe('false'); // jsdom: no canvas
    const legend = [...container.querySelectorAll('.jp-BurstChart-series')];
    expect(legend.map(li => li.textContent)).toEqual([
      'rank 0 0.5',
      'rank 1 2'
    ]);
    expect(
      (legend[1].querySelector('.jp-BurstChart-swatch') as HTMLElement).style
        .background
    ).not.toBe('');
    expect(seriesColour(1)).not.toBe(seriesColour(0));
  });

  it('follows new points', () => {
    const first = addPoints({}, [
      { ts: 0, rank: 0, step: 0, name: 'loss', value: 1 }
    ]);
    const { container, rerender } = render(
      <MetricsCharts curves={first} trans={trans} />
    );
    const points = () =>
      container.querySelector('.jp-BurstChart')!.getAttribute('data-points');
    expect(points()).toBe('1');
    const second = addPoints(first, [
      { ts: 1, rank: 0, step: 1, name: 'loss', value: 0.5 },
      { ts: 1, rank: 1, step: 1, name: 'loss', value: 0.6 }
    ]);
    rerender(<MetricsCharts curves={second} trans={trans} />);
    expect(points()).toBe('2,1');
  });

  it('formats values short', () => {
    expect(formatValue(0.123456)).toBe('0.1235');
    expect(formatValue(12345.6)).toBe('12350');
    expect(formatValue(0)).toBe('0');
    expect(formatValue(2e-7)).toBe('2.000e-7');
  });
});

describe('the renderer of the chart under a cell', () => {
  it('is registered for the metrics display, ranked before images', () => {
    const factory = metricsRendererFactory(trans);
    expect(factory.mimeTypes).toEqual([METRICS_MIME_TYPE]);
    expect(factory.safe).toBe(true);
    expect(factory.defaultRank).toBeLessThan(90); // image/png's rank
  });

  it("draws the kernel's points, and the updated ones in place", async () => {
    const renderer = new MetricsRenderer(trans);
    document.body.appendChild(renderer.node);
    const model = (loss: Record<string, [number, number][]>) =>
      ({
        data: { [METRICS_MIME_TYPE]: { job: 'j1', metrics: { loss } } },
        metadata: {},
        trusted: false,
        setData: () => undefined
      }) as any;
    await renderer.renderModel(model({ '0': [[0, 1]], '1': [[0, 1.1]] }));
    const figure = () => renderer.node.querySelector('.jp-BurstChart');
    expect(figure()?.getAttribute('data-points')).toBe('1,1');
    await renderer.renderModel(
      model({
        '0': [
          [0, 1],
          [1, 0.4]
        ],
        '1': [
          [0, 1.1],
          [1, 0.5]
        ]
      })
    );
    expect(figure()?.getAttribute('data-points')).toBe('2,2');
    expect(
      renderer.node.querySelector('[data-job]')?.getAttribute('data-job')
    ).toBe('j1');
    renderer.dispose();
  });
});
