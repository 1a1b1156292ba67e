import {
  cleanup,
  fireEvent,
  render,
  screen,
  within
} from '@testing-library/react';
import * as React from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { nullTranslator } from '@jupyterlab/translation';

import {
  CheckpointsSection,
  ClustersSection,
  IClustersProps
} from '../components';
import { ICheckpoint, ICluster, ICost, ISpend, IStart } from '../model';

const trans = nullTranslator.load('jupyter_burst');

afterEach(cleanup);

function spend(exact: string, usd: string): ISpend {
  return { usd, exact, notional: { usd: '$0.00', exact: '0' }, shown: usd };
}

const cluster: ICluster = {
  id: 'c1',
  name: 'default',
  provider: 'aws',
  state: 'running',
  stop_reason: null,
  nodes: 2,
  gpus: 8,
  cpu_slots: 0,
  started: 0,
  uptime_seconds: 600,
  idle_minutes: 20,
  idle_remaining_seconds: 300,
  busy: false,
  per_hour: spend('36', '$36.00'),
  so_far: spend('6.00', '$6.00')
};

const cost: ICost = {
  now: 0,
  running: { per_hour: spend('36', '$36.00'), so_far: spend('6.00', '$6.00') },
  jobs: [],
  today: spend('7.5', '$7.50'),
  month: spend('120', '$120.00'),
  budget: {
    left: { usd: '$42.50', exact: '42.5' },
    daily: { usd: '$50.00', exact: '50' }
  }
};

function clusters(overrides: Partial<IClustersProps> = {}) {
  const props: IClustersProps = {
    clusters: [
      cluster,
      { ...cluster, id: 'c0', name: 'old', state: 'stopped' }
    ],
    cost,
    fetchedAt: 1_000_000,
    now: 1_000_000,
    stopping: new Set(),
    onStop: vi.fn(),
    onIdle: vi.fn(),
    trans,
    ...overrides
  };
  return { props, view: render(<ClustersSection {...props} />) };
}

describe('Clusters & cost', () => {
  it('ticks the running cost every second from the server figure and the rate', () => {
    const { props, view } = clusters();
    expect(screen.getByTestId('live-cost').textContent).toBe('$6.00');
    // $36/h is a cent a second.
    view.rerender(<ClustersSection {...props} now={props.fetchedAt + 1000} />);
    expect(screen.getByTestId('live-cost').textContent).toBe('$6.01');
    expect(screen.getByTestId('cluster-cost').textContent).toBe('$6.01');
    view.rerender(
      <ClustersSection {...props} now={props.fetchedAt + 60_000} />
    );
    expect(screen.getByTestId('live-cost').textContent).toBe('$6.60');
    expect(view.container.textContent).toContain('stops in 4 min 0 s if idle');
  });

  it('shows the facts of a running cluster, today, month and the budget left', () => {
    const { view } = clusters();
    const text = view.container.textContent;
    expect(text).toContain('2 nodes · 8 GPUs');
    expect(text).toContain('today $7.50 · month $120.00');
    expect(text).toContain('budget left $42.50 of $50.00/day');
    expect(text).toContain('Stopped today (1)');
  });

  it('stops a cluster with one click, and says it is stopping', () => {
    const { props, view } = clusters();
    fireEvent.click(
      screen.getByRole('button', { name: 'Stop cluster default now' })
    );
    expect(props.onStop).toHaveBeenCalledWith('c1');
    view.rerender(<ClustersSection {...props} stopping={new Set(['c1'])} />);
    const button = screen.getByRole('button', {
      name: 'Stop cluster default now'
    });
    expect(button.textContent).toBe('Stopping…');
    expect((button as HTMLButtonElement).disabled).toBe(true);
  });

  it('changes the idle timeout, and ignores what is not a number of minutes', () => {
    const { props } = clusters();
    const input = screen.getByLabelText('Idle timeout of default in minutes');
    fireEvent.change(input, { target: { value: '0' } });
    fireEvent.submit(input.closest('form')!);
    expect(props.onIdle).not.toHaveBeenCalled();
    fireEvent.change(input, { target: { value: '7.5' } });
    fireEvent.submit(input.closest('form')!);
    expect(props.onIdle).toHaveBeenCalledWith('c1', 7.5);
  });

  it('opens the dashboard of a running cluster that has one, by its name and path', () => {
    const onDashboard = vi.fn();
    const url = '/jupyter-burst/dashboard/default/status';
    clusters({
      clusters: [
        { ...cluster, dashboard_url: url },
        { ...cluster, id: 'c2', name: 'plain', dashboard_url: null }
      ],
      onDashboard
    });
    expect(
      screen.getAllByRole('button', { name: /^Dask dashboard of cluster/ })
    ).toHaveLength(1);
    fireEvent.click(
      screen.getByRole('button', { name: 'Dask dashboard of cluster default' })
    );
    expect(onDashboard).toHaveBeenCalledWith('default', url);
  });

  it('says when nothing runs, with the spend of today and the month', () => {
    const { view } = clusters({ clusters: [] });
    expect(screen.getByText('No cluster is running.')).toBeTruthy();
    expect(screen.queryByTestId('live-cost')).toBeNull();
    expect(view.container.textContent).toContain('today $7.50 · month $120.00');
  });
});

function phase(
  label: string,
  seconds: number,
  current = false
): IStart['phases'][number] {
  return {
    phase: label.split(' ')[0],
    label,
    detail: '',
    done: null,
    total: null,
    started: 0,
    seconds,
    current
  };
}

const startingExp: IStart = {
  id: 's2',
  name: 'exp',
  provider: 'aws',
  purpose: 'prewarm',
  state: 'starting',
  cluster_id: null,
  error: null,
  started: 0,
  ended: null,
  seconds: 12.4,
  phases: [
    phase('quote', 0.3),
    phase('launching 2/2', 4.1),
    phase('booting', 8, true)
  ]
};

const startedDefault: IStart = {
  ...startingExp,
  id: 's1',
  name: 'default',
  purpose: 'cell',
  state: 'running',
  cluster_id: 'c1',
  ended: 3,
  seconds: 3.1,
  phases: [
    phase('quote', 0),
    phase('launching 1/1', 0.1),
    phase('workers joined 8/8', 3)
  ]
};

describe('Cluster starts', () => {
  it('shows a start under way phase by phase, the phase under way counting', () => {
    const { props, view } = clusters({ clusters: [], starts: [startingExp] });
    const row = view.container.querySelector(
      '.jp-BurstStart[data-cluster="exp"]'
    )!;
    expect(row.textContent).toContain('pre-warm');
    // The arrows between phases are the stylesheet's (::before), not text.
    expect(row.textContent).toContain(
      'starting for 12 s: quote 0.3 slaunching 2/2 4.1 sbooting 8.0 s'
    );
    expect(row.querySelector('.jp-mod-current')!.textContent).toBe(
      'booting 8.0 s'
    );
    expect(screen.queryByText('No cluster is running.')).toBeNull();
    view.rerender(<ClustersSection {...props} now={props.fetchedAt + 3000} />);
    expect(row.querySelector('.jp-mod-current')!.textContent).toBe(
      'booting 11 s'
    );
    expect(row.textContent).toContain('starting for 15 s');
  });

  it('keeps on a running cluster where its start spent its time', () => {
    const { view } = clusters({ starts: [startingExp, startedDefault] });
    const row = view.container.querySelector(
      '.jp-BurstCluster[data-cluster="default"]'
    )!;
    const phases = row.querySelector('.jp-BurstStart-phases')!;
    expect(phases.textContent).toBe(
      'started in 3.1 s: quote 0.0 slaunching 1/1 0.1 sworkers joined 8/8 3.0 srunning'
    );
    expect(phases.querySelector('.jp-mod-current')).toBeNull();
  });
});

describe('Checkpoints', () => {
  const checkpoint: ICheckpoint = {
    job: 'abc',
    name: 'ckpt-000002-aa',
    step: 2,
    time: 1_700_000_000,
    bytes: 2048,
    sha256: 'x',
    format: 'pickle',
    cell: 'for epoch in range(10):',
    restore: '%burst restore abc step=2'
  };

  it('lists the newest first, restores and links the download', () => {
    const onRestore = vi.fn();
    const older = { ...checkpoint, name: 'ckpt-000001-bb', step: 1 };
    const { container } = render(
      <CheckpointsSection
        checkpoints={[older, checkpoint]}
        downloadUrl={c =>
          `/jupyter-burst/checkpoints/${c.job}/${c.name}/download`
        }
        onRestore={onRestore}
        trans={trans}
      />
    );
    const items = container.querySelectorAll('li');
    expect(items[0].textContent).toContain('step 2');
    expect(items[0].textContent).toContain('2.0 KB');
    fireEvent.click(
      within(items[0] as HTMLElement).getByRole('button', { name: 'Restore' })
    );
    expect(onRestore).toHaveBeenCalledWith(checkpoint);
    const link = within(items[1] as HTMLElement).getByText(
      'Download'
    ) as HTMLAnchorElement;
    expect(link.getAttribute('href')).toBe(
      '/jupyter-burst/checkpoints/abc/ckpt-000001-bb/download'
    );
  });
});
