import { nullTranslator } from '@jupyterlab/translation';
import {
  cleanup,
  fireEvent,
  render,
  screen,
  within
} from '@testing-library/react';
import * as React from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { ILogViewProps, IJobsProps, JobsSection, LogView } from '../jobs';
import { IJob, ISpend } from '../model';

afterEach(cleanup);

const trans = nullTranslator.load('jupyter_burst');

function spend(exact: string, usd: string): ISpend {
  return { usd, exact, notional: { usd: '$0.00', exact: '0' }, shown: usd };
}

const job: IJob = {
  id: 'job1',
  name: null,
  background: false,
  status: 'running',
  stop_reason: null,
  error: null,
  kernel: 'k',
  notebook: 'experiments/train.ipynb',
  cell_number: 12,
  cluster: 'default',
  cell: 'for epoch in range(10):',
  started: 100,
  ended: null,
  duration_seconds: 65,
  cost: spend('0.65', '$0.65')
};

function jobs(list: IJob[], overrides: Partial<IJobsProps> = {}) {
  const props: IJobsProps = {
    jobs: list,
    selected: null,
    onSelect: vi.fn(),
    onCancel: vi.fn(),
    cancelling: new Set(),
    log: null,
    trans,
    ...overrides
  };
  return { props, view: render(<JobsSection {...props} />) };
}

/** The job rows, top to bottom (the status filter's <option>s are options too). */
function rows(): HTMLElement[] {
  return screen
    .queryAllByRole('listbox', { name: 'Jobs' })
    .flatMap(list => within(list).queryAllByRole('option'));
}

function logProps(overrides: Partial<ILogViewProps> = {}): ILogViewProps {
  return {
    jobId: 'job1',
    lines: [
      { ts: 1, rank: 0, stream: 'stdout', text: 'epoch 0' },
      { ts: 2, rank: 1, stream: 'stderr', text: 'warning' }
    ],
    dropped: 0,
    ranks: [0, 1],
    rank: null,
    search: '',
    following: true,
    state: 'live',
    error: null,
    onRank: vi.fn(),
    onSearch: vi.fn(),
    onFollow: vi.fn(),
    ...overrides
  };
}

describe('Jobs & logs', () => {
  it('lists jobs, selects one with the keyboard, and cancels a running one', () => {
    const { props } = jobs([
      job,
      { ...job, id: 'job0', status: 'done', started: 50, cell_number: 11 }
    ]);
    const options = rows();
    expect(options[0].textContent).toContain('train.ipynb [12]');
    expect(options[0].textContent).toContain('1 min 5 s · $0.65');
    fireEvent.keyDown(options[1], { key: 'Enter' });
    expect(props.onSelect).toHaveBeenCalledWith('job0');
    expect(within(options[1]).queryByRole('button')).toBeNull(); // a done job: no cancel
    fireEvent.click(
      within(options[0]).getByRole('button', { name: /Cancel job/ })
    );
    expect(props.onCancel).toHaveBeenCalledWith('job1');
    expect(props.onSelect).toHaveBeenCalledTimes(1); // the click did not also select the row
  });

  it('groups the jobs by notebook, then cluster, newest first', () => {
    const { view } = jobs([
      {
        ...job,
        id: 'old',
        notebook: 'a/old.ipynb',
        started: 1,
        status: 'done'
      },
      { ...job, id: 'loose', notebook: null, cell_number: null, started: 2 },
      { ...job, id: 'big', cluster: 'big', started: 3, name: 'sweep' },
      { ...job, id: 'new', started: 4 }
    ]);
    const groups = view.container.querySelectorAll('.jp-BurstJobGroup');
    expect(
      [...groups].map(
        g => g.querySelector('.jp-BurstJobGroup-title')!.textContent
      )
    ).toEqual(['train.ipynb', '(no notebook)', 'old.ipynb']);
    const clusters = groups[0].querySelectorAll('.jp-BurstJobGroup-cluster');
    expect([...clusters].map(c => c.getAttribute('data-cluster'))).toEqual([
      'default',
      'big'
    ]);
    expect(clusters[1].textContent).toContain('on cluster big');
    expect(clusters[1].textContent).toContain('train.ipynb [12] · sweep');
    expect(groups[1].textContent).toContain(
      '(no notebook): for epoch in range(10):'
    );
  });

  it('shows the last ten of a notebook, and more with a click', () => {
    const many = Array.from({ length: 23 }, (_, i) => ({
      ...job,
      id: `j${i}`,
      status: 'done',
      started: i,
      cell_number: i
    }));
    jobs(many);
    expect(rows()).toHaveLength(10);
    expect(rows()[0].textContent).toContain('[22]');
    const more = screen.getByRole('button', {
      name: 'Show more jobs of train.ipynb'
    });
    expect(more.textContent).toBe('more (13 older)');
    fireEvent.click(more);
    expect(rows()).toHaveLength(20);
    fireEvent.click(screen.getByRole('button', { name: /Show more jobs/ }));
    expect(rows()).toHaveLength(23);
    expect(screen.queryByRole('button', { name: /Show more jobs/ })).toBeNull();
  });

  it('filters by status, with how many jobs each status has', () => {
    jobs([
      job,
      { ...job, id: 'f1', status: 'failed', started: 5 },
      { ...job, id: 'f2', status: 'failed', started: 6, notebook: 'b.ipynb' },
      { ...job, id: 'd1', status: 'done', started: 7 }
    ]);
    const filter = screen.getByLabelText(
      'Show the jobs of status'
    ) as HTMLSelectElement;
    expect([...filter.options].map(o => o.textContent)).toEqual([
      'all (4)',
      'running (1)',
      'done (1)',
      'failed (2)',
      'cancelled (0)',
      'interrupted (0)',
      'lost (0)'
    ]);
    fireEvent.change(filter, { target: { value: 'failed' } });
    expect(rows().map(o => o.getAttribute('data-job'))).toEqual(['f2', 'f1']);
    fireEvent.change(filter, { target: { value: 'lost' } });
    expect(rows()).toHaveLength(0);
    expect(screen.getByText('No job is lost.')).toBeTruthy();
  });

  it('shows lines with their rank, and a note for lines left out of the view', () => {
    const { container } = render(
      <LogView {...logProps({ dropped: 48213 })} trans={trans} />
    );
    expect(container.textContent).toContain('[0] epoch 0');
    expect(screen.getByRole('status').textContent).toContain(
      '48,213 earlier lines not shown here'
    );
  });

  it('pauses and follows, filters by rank, searches', () => {
    const props = logProps();
    const view = render(<LogView {...props} trans={trans} />);
    fireEvent.click(screen.getByRole('button', { name: 'Pause' }));
    expect(props.onFollow).toHaveBeenCalledWith(false);
    view.rerender(<LogView {...props} following={false} trans={trans} />);
    expect(
      screen
        .getByRole('button', { name: 'Follow' })
        .getAttribute('aria-pressed')
    ).toBe('false');
    fireEvent.change(screen.getByLabelText('Show the lines of rank'), {
      target: { value: '1' }
    });
    expect(props.onRank).toHaveBeenCalledWith(1);
    fireEvent.change(screen.getByLabelText('Show the lines of rank'), {
      target: { value: '' }
    });
    expect(props.onRank).toHaveBeenLastCalledWith(null);
    fireEvent.change(screen.getByLabelText('Search the log'), {
      target: { value: 'loss' }
    });
    expect(props.onSearch).toHaveBeenCalledWith('loss');
  });

  it('does not label ranks when there is one', () => {
    const { container } = render(
      <LogView
        {...logProps({
          ranks: [0],
          lines: [{ ts: 1, rank: 0, stream: 'stdout', text: 'hi' }]
        })}
        trans={trans}
      />
    );
    expect(container.querySelector('.jp-BurstLog-lines')!.textContent).toBe(
      'hi'
    );
  });
});
