import { describe, expect, it } from 'vitest';

import { groupJobs, jobTitle, notebookName, statusCounts } from '../joblist';
import { IJob } from '../model';

let next = 0;

/** A job row as the server sends it; `started` counts up, so later jobs are newer. */
function job(overrides: Partial<IJob> = {}): IJob {
  next += 1;
  return {
    id: `job${next}`,
    name: null,
    background: false,
    status: 'done',
    stop_reason: null,
    error: null,
    kernel: 'k',
    notebook: 'experiments/train.ipynb',
    cell_number: next,
    cluster: 'default',
    cell: 'import os, time',
    started: 1_700_000_000 + next,
    ended: null,
    duration_seconds: 1,
    cost: {
      usd: '$0.00',
      exact: '0',
      notional: { usd: '$0.00', exact: '0' },
      shown: ''
    },
    ...overrides
  };
}

describe('the job list', () => {
  it('titles a job by its notebook and cell number, and its name', () => {
    expect(jobTitle(job({ cell_number: 5 }), '(no notebook)')).toBe(
      'train.ipynb [5]'
    );
    expect(jobTitle(job({ cell_number: 7, name: 'sweep' }), '-')).toBe(
      'train.ipynb [7] · sweep'
    );
    // Where the number is not known (an older server), the cell's first line says which.
    expect(jobTitle(job({ cell_number: null }), '-')).toBe(
      'train.ipynb: import os, time'
    );
    expect(jobTitle(job({ cell_number: undefined }), '-')).toBe(
      'train.ipynb: import os, time'
    );
    expect(
      jobTitle(job({ notebook: null, cell_number: 3 }), '(no notebook)')
    ).toBe('(no notebook) [3]');
    expect(notebookName('a/b/c.ipynb')).toBe('c.ipynb');
    expect(notebookName('c.ipynb')).toBe('c.ipynb');
  });

  it('groups by notebook, then cluster, the newest first', () => {
    const a1 = job({ notebook: 'a.ipynb', cluster: 'default' });
    const b1 = job({ notebook: 'b.ipynb', cluster: 'default' });
    const a2 = job({ notebook: 'a.ipynb', cluster: 'big' });
    const none = job({ notebook: null, cluster: null });
    const a3 = job({ notebook: 'a.ipynb', cluster: 'default' });
    // The server's order does not matter: the list sorts by start time.
    const groups = groupJobs([b1, none, a1, a3, a2], 'all');
    expect(groups.map(g => g.notebook)).toEqual(['a.ipynb', null, 'b.ipynb']);
    expect(
      groups[0].clusters.map(c => [c.cluster, c.jobs.map(j => j.id)])
    ).toEqual([
      ['default', [a3.id, a1.id]],
      ['big', [a2.id]]
    ]);
    expect(groups[1].clusters).toEqual([{ cluster: null, jobs: [none] }]);
  });

  it('shows the last few of each notebook, and more on demand', () => {
    const many = Array.from({ length: 25 }, () =>
      job({ notebook: 'long.ipynb' })
    );
    const other = job({ notebook: 'short.ipynb' });
    const [long, short] = groupJobs([...many, other], 'all').sort((x, y) =>
      (x.notebook ?? '').localeCompare(y.notebook ?? '')
    );
    expect(long.shown).toBe(10);
    expect(long.hidden).toBe(15);
    expect(long.clusters[0].jobs[0].id).toBe(many[24].id); // the newest
    expect(short).toMatchObject({ shown: 1, hidden: 0 });
    const [more] = groupJobs(many, 'all', () => 20);
    expect(more).toMatchObject({ shown: 20, hidden: 5 });
  });

  it('filters by status, and counts each status', () => {
    const jobs = [
      job({ status: 'done' }),
      job({ status: 'failed' }),
      job({ status: 'running' }),
      job({ status: 'failed', notebook: 'other.ipynb' })
    ];
    const failed = groupJobs(jobs, 'failed');
    expect(
      failed.flatMap(g => g.clusters.flatMap(c => c.jobs.map(j => j.status)))
    ).toEqual(['failed', 'failed']);
    expect(groupJobs(jobs, 'lost')).toEqual([]);
    expect(groupJobs(jobs, 'all').reduce((n, g) => n + g.shown, 0)).toBe(4);
    expect(Object.fromEntries(statusCounts(jobs))).toEqual({
      done: 1,
      failed: 2,
      running: 1
    });
  });
});
