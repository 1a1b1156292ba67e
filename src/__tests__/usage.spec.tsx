import { nullTranslator } from '@jupyterlab/translation';
import { cleanup, render, screen } from '@testing-library/react';
import * as React from 'react';
import { afterEach, describe, expect, it } from 'vitest';

import { JobCharts } from '../jobs';
import { addPoints } from '../metrics';
import { ICluster, ISlotUsage } from '../model';
import { UsageSection } from '../usage';

afterEach(cleanup);

const trans = nullTranslator.load('jupyter_burst');

const zero = {
  usd: '$0.00',
  exact: '0',
  notional: { usd: '$0.00', exact: '0' },
  shown: '$0.00'
};

function slot(overrides: Partial<ISlotUsage>): ISlotUsage {
  return {
    worker: 'tcp://10.0.0.5:4000',
    host: '10.0.0.5',
    device: 'cpu',
    label: 'CPU slot',
    busy: false,
    cpu_percent: 12.4,
    rss: 200 * 1024 * 1024,
    host_cpu_percent: 30,
    host_memory_used: 4 * 1024 ** 3,
    host_memory_total: 16 * 1024 ** 3,
    gpu_utilization: null,
    gpu_memory_used: null,
    gpu_memory_total: null,
    idle_gpu: false,
    ...overrides
  };
}

function cluster(usage: ISlotUsage[], state = 'running'): ICluster {
  return {
    id: 'c1',
    name: 'default',
    provider: 'local',
    state: state as ICluster['state'],
    stop_reason: null,
    nodes: 1,
    gpus: 0,
    cpu_slots: usage.length,
    started: 0,
    uptime_seconds: 10,
    idle_minutes: 5,
    idle_remaining_seconds: 300,
    busy: false,
    per_hour: zero,
    so_far: zero,
    usage
  };
}

describe('GPU use', () => {
  it('shows a CPU slot as such, with its CPU and memory and no GPU bars', () => {
    const { container } = render(
      <UsageSection clusters={[cluster([slot({})])]} trans={trans} />
    );
    const row = container.querySelector('.jp-BurstSlot')!;
    expect(row.classList).toContain('jp-mod-cpu');
    expect(row.textContent).toContain('CPU slot');
    expect(row.textContent).toContain('on 10.0.0.5 · 10.0.0.5:4000');
    expect(row.textContent).toContain('12%');
    expect(row.textContent).toContain('memory 200.0 MB');
    expect(row.querySelector('.jp-BurstBar.jp-mod-gpu')).toBeNull();
  });

  it("draws a GPU's utilisation and memory as bars and marks an idle one", () => {
    const { container } = render(
      <UsageSection
        clusters={[
          cluster([
            slot({
              device: 'cuda:0',
              label: 'NVIDIA H100 80GB HBM3',
              busy: true,
              gpu_utilization: 3,
              gpu_memory_used: 20 * 1024 ** 3,
              gpu_memory_total: 80 * 1024 ** 3,
              idle_gpu: true
            }),
            slot({
              device: 'cuda:1',
              label: 'NVIDIA H100 80GB HBM3',
              busy: true,
              gpu_utilization: 97,
              gpu_memory_used: 60 * 1024 ** 3,
              gpu_memory_total: 80 * 1024 ** 3
            })
          ])
        ]}
        trans={trans}
      />
    );
    const [idle, working] = [...container.querySelectorAll('.jp-BurstSlot')];
    expect(idle.classList).toContain('jp-mod-idleGpu');
    expect(idle.textContent).toContain('idle GPU');
    expect(working.classList).not.toContain('jp-mod-idleGpu');
    expect(working.textContent).not.toContain('idle GPU');
    const meters = screen.getAllByRole('meter', { name: 'GPU' });
    expect(meters.map(m => m.getAttribute('aria-valuenow'))).toEqual([
      '3',
      '97'
    ]);
    expect(
      screen
        .getAllByRole('meter', { name: 'GPU mem' })
        .map(m => m.getAttribute('aria-valuenow'))
    ).toEqual(['25', '75']);
    expect(working.textContent).toContain('60.0 GB / 80.0 GB');
  });

  it('shows nothing without a running cluster, and says when no sample came yet', () => {
    const { container, rerender } = render(
      <UsageSection clusters={[cluster([], 'stopped')]} trans={trans} />
    );
    expect(container.querySelector('.jp-BurstUsage')).toBeNull();
    rerender(<UsageSection clusters={[cluster([])]} trans={trans} />);
    expect(container.textContent).toContain('No sample from its workers yet.');
  });
});

describe("a job's charts", () => {
  it('draws a chart per metric and its cost over time', () => {
    const curves = addPoints(
      {},
      [0, 1].flatMap(step =>
        [0, 1].map(rank => ({
          ts: 0,
          rank,
          step,
          name: 'loss',
          value: 1 / (step + 1)
        }))
      )
    );
    const { container } = render(
      <JobCharts
        jobId="j1"
        curves={curves}
        complete={false}
        loaded
        cost={[
          [1, 0.01],
          [4, 0.04]
        ]}
        trans={trans}
      />
    );
    const charts = [...container.querySelectorAll('.jp-BurstChart')];
    expect(charts.map(c => c.getAttribute('data-name'))).toEqual([
      'loss',
      'cost over time'
    ]);
    expect(charts[0].getAttribute('data-points')).toBe('2,2');
    expect(charts[1].getAttribute('data-points')).toBe('2');
    expect(charts[1].textContent).toContain('$0.040');
  });

  it('says when a finished job logged nothing', () => {
    const { container } = render(
      <JobCharts
        jobId="j1"
        curves={{}}
        complete
        loaded
        cost={null}
        trans={trans}
      />
    );
    expect(container.textContent).toContain('This job logged no metrics.');
    expect(container.querySelector('.jp-BurstChart')).toBeNull();
  });
});
