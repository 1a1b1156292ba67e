/**
 * The job list a user can find things in: jobs grouped by notebook, then by cluster,
 * newest first, each titled by its notebook and cell number, the last few of each
 * notebook shown (more on demand), filtered by status. Pure functions of the server's
 * rows, so that the unit tests run them directly.
 */

import { IJob } from './model';

/** How many jobs of a notebook are shown at first, and how many more each "more" shows. */
export const JOBS_PER_GROUP = 10;

/** The statuses the ledger gives a job (kernel/cell.py, node/job_runner.py, driver/job_log.py). */
export const JOB_STATUSES = [
  'running',
  'done',
  'failed',
  'cancelled',
  'interrupted',
  'lost'
] as const;

/** A status to show, or every job. */
export type StatusFilter = 'all' | string;

/** The jobs of one cluster within a notebook's group, newest first. */
export interface IClusterJobs {
  cluster: string | null;
  jobs: IJob[];
}

/** One notebook's jobs: those shown (by cluster) and how many more there are. */
export interface IJobGroup {
  /** The notebook's path, or null for jobs no notebook is known for. */
  notebook: string | null;
  clusters: IClusterJobs[];
  shown: number;
  hidden: number;
}

/** The key a group is remembered by (its "more" count); null has one of its own. */
export function groupKey(notebook: string | null): string {
  return notebook ?? '\0';
}

/** The file name of a notebook path ("experiments/train.ipynb" → "train.ipynb"). */
export function notebookName(path: string): string {
  const parts = path.split('/');
  return parts[parts.length - 1] || path;
}

/**
 * What a job is called in the list: its notebook and cell number ("train.ipynb [5]"), the
 * cell's first line where the number is not known, and its `name=` after, if it has one.
 */
export function jobTitle(job: IJob, noNotebook: string): string {
  const where = job.notebook ? notebookName(job.notebook) : noNotebook;
  const cell =
    job.cell_number !== null && job.cell_number !== undefined
      ? `${where} [${job.cell_number}]`
      : `${where}: ${job.cell}`;
  return job.name ? `${cell} · ${job.name}` : cell;
}

/** How many jobs have each status (for the filter's choices). */
export function statusCounts(jobs: readonly IJob[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const job of jobs) {
    counts.set(job.status, (counts.get(job.status) ?? 0) + 1);
  }
  return counts;
}

/**
 * The jobs with `status` (all for 'all'), grouped by notebook, the notebook with the newest
 * job first; in each, at most `limit(key)` of its newest jobs, by cluster (the cluster with
 * the newest job first), each cluster's newest first.
 */
export function groupJobs(
  jobs: readonly IJob[],
  status: StatusFilter,
  limit: (key: string) => number = () => JOBS_PER_GROUP
): IJobGroup[] {
  const newestFirst = jobs
    .filter(job => status === 'all' || job.status === status)
    .sort((a, b) => b.started - a.started);
  const byNotebook = new Map<string, IJob[]>();
  for (const job of newestFirst) {
    const key = groupKey(job.notebook);
    const group = byNotebook.get(key);
    if (group) {
      group.push(job);
    } else {
      byNotebook.set(key, [job]);
    }
  }
  // Maps keep insertion order: the notebook whose job came first is the newest.
  return [...byNotebook.entries()].map(([key, all]) => {
    const shown = all.slice(0, Math.max(0, limit(key)));
    const byCluster = new Map<string | null, IJob[]>();
    for (const job of shown) {
      const cluster = job.cluster ?? null;
      byCluster.set(cluster, [...(byCluster.get(cluster) ?? []), job]);
    }
    return {
      notebook: all[0].notebook,
      clusters: [...byCluster.entries()].map(([cluster, clusterJobs]) => ({
        cluster,
        jobs: clusterJobs
      })),
      shown: shown.length,
      hidden: all.length - shown.length
    };
  });
}
