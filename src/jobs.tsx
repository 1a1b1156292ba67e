/**
 * The "Jobs & logs" section: the jobs grouped by notebook, then cluster, newest first
 * (joblist.ts decides what shows), a status filter, and the selected job's charts (its
 * metrics, its cost over time) and live log.
 * Components of plain props: they fetch nothing themselves, so the unit tests render them.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { Button, HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { Chart, MetricsCharts } from './chart';
import {
  groupJobs,
  groupKey,
  IJobGroup,
  JOB_STATUSES,
  JOBS_PER_GROUP,
  jobTitle,
  notebookName,
  statusCounts,
  StatusFilter
} from './joblist';
import { CostSample, costChart, Curves } from './metrics';
import { formatDuration, formatUsd, IJob, ILogLine } from './model';

export interface IJobsProps {
  jobs: IJob[];
  selected: string | null;
  onSelect: (jobId: string | null) => void;
  onCancel: (jobId: string) => void;
  cancelling: ReadonlySet<string>;
  /** The selected job's charts. */
  charts?: IJobChartsProps | null;
  /** The selected job's log view. */
  log: ILogViewProps | null;
  trans: TranslationBundle;
}

export function JobsSection(props: IJobsProps): JSX.Element {
  const { jobs, log, trans } = props;
  const [status, setStatus] = React.useState<StatusFilter>('all');
  // How many jobs each notebook's group shows, by its key; "more" raises it.
  const [limits, setLimits] = React.useState<ReadonlyMap<string, number>>(
    new Map()
  );
  const limit = (key: string) => limits.get(key) ?? JOBS_PER_GROUP;
  const groups = groupJobs(jobs, status, limit);
  const more = (key: string) =>
    setLimits(new Map(limits).set(key, limit(key) + JOBS_PER_GROUP));
  return (
    <section
      className="jp-BurstSection jp-BurstJobs"
      aria-label={trans.__('Jobs and logs')}
    >
      <h3 className="jp-BurstSection-title">{trans.__('Jobs & logs')}</h3>
      {jobs.length === 0 ? (
        <p className="jp-BurstEmpty">{trans.__('No job has run yet.')}</p>
      ) : (
        <StatusChoice
          jobs={jobs}
          status={status}
          onStatus={setStatus}
          trans={trans}
        />
      )}
      {jobs.length > 0 && groups.length === 0 && (
        <p className="jp-BurstEmpty">{trans.__('No job is %1.', status)}</p>
      )}
      {groups.map(group => (
        <JobGroup
          key={groupKey(group.notebook)}
          group={group}
          onMore={() => more(groupKey(group.notebook))}
          {...props}
        />
      ))}
      {props.charts && <JobCharts {...props.charts} trans={trans} />}
      {log && <LogView {...log} trans={trans} />}
    </section>
  );
}

/** The status filter: every job, or those of one status (with how many there are). */
function StatusChoice(props: {
  jobs: IJob[];
  status: StatusFilter;
  onStatus: (status: StatusFilter) => void;
  trans: TranslationBundle;
}): JSX.Element {
  const { jobs, status, onStatus, trans } = props;
  const counts = statusCounts(jobs);
  // The known statuses in their order, then any other the server sends.
  const statuses = [
    ...JOB_STATUSES,
    ...[...counts.keys()].filter(
      s => !(JOB_STATUSES as readonly string[]).includes(s)
    )
  ];
  const options = [
    { value: 'all', label: trans.__('all (%1)', jobs.length) },
    ...statuses.map(s => ({ value: s, label: `${s} (${counts.get(s) ?? 0})` }))
  ];
  return (
    <label className="jp-BurstJobs-filter">
      {trans.__('status')}{' '}
      <HTMLSelect
        className="jp-BurstJobs-status"
        value={status}
        options={options}
        onChange={event => onStatus(event.target.value)}
        aria-label={trans.__('Show the jobs of status')}
      />
    </label>
  );
}

/** One notebook's jobs, by cluster, with "more" while older ones are left out. */
function JobGroup(
  props: IJobsProps & { group: IJobGroup; onMore: () => void }
): JSX.Element {
  const { group, onMore, trans } = props;
  const name = group.notebook
    ? notebookName(group.notebook)
    : trans.__('(no notebook)');
  return (
    <div
      className="jp-BurstJobGroup"
      data-notebook={group.notebook ?? ''}
      aria-label={trans.__('Jobs of %1', name)}
      role="group"
    >
      <h4
        className="jp-BurstJobGroup-title"
        title={group.notebook ?? undefined}
      >
        {name}
      </h4>
      {group.clusters.map(({ cluster, jobs }) => (
        <div
          key={cluster ?? ''}
          className="jp-BurstJobGroup-cluster"
          data-cluster={cluster ?? ''}
        >
          {cluster !== null && (
            <div className="jp-BurstJobGroup-clusterName">
              {trans.__('on cluster %1', cluster)}
            </div>
          )}
          <ul
            className="jp-BurstList"
            role="listbox"
            aria-label={trans.__('Jobs')}
          >
            {jobs.map(job => (
              <JobRow key={job.id} job={job} {...props} />
            ))}
          </ul>
        </div>
      ))}
      {group.hidden > 0 && (
        <Button
          small
          minimal
          className="jp-BurstJobGroup-more"
          onClick={onMore}
          aria-label={trans.__('Show more jobs of %1', name)}
        >
          {trans.__('more (%1 older)', group.hidden)}
        </Button>
      )}
    </div>
  );
}

function JobRow(props: IJobsProps & { job: IJob }): JSX.Element {
  const { job, selected, onSelect, onCancel, cancelling, trans } = props;
  const toggle = () => onSelect(job.id === selected ? null : job.id);
  return (
    <li
      className={`jp-BurstJob jp-mod-${job.status}${
        job.id === selected ? ' jp-mod-selected' : ''
      }`}
      data-job={job.id}
      role="option"
      aria-selected={job.id === selected}
      tabIndex={0}
      onClick={toggle}
      onKeyDown={event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          toggle();
        }
      }}
    >
      <div className="jp-BurstJob-head">
        <span className="jp-BurstJob-status">{job.status}</span>
        <span className="jp-BurstJob-cell" title={job.cell}>
          {jobTitle(job, trans.__('(no notebook)'))}
        </span>
      </div>
      <div className="jp-BurstJob-facts">
        {formatDuration(job.duration_seconds)} · {job.cost.usd}
        {job.error ? ` · ${job.error}` : ''}
        {job.status === 'running' && (
          <Button
            small
            className="jp-mod-styled jp-mod-warn jp-BurstJob-cancel"
            disabled={cancelling.has(job.id)}
            onClick={event => {
              event.stopPropagation();
              onCancel(job.id);
            }}
            aria-label={trans.__('Cancel job %1', job.name ?? job.id)}
          >
            {cancelling.has(job.id)
              ? trans.__('Cancelling…')
              : trans.__('Cancel')}
          </Button>
        )}
      </div>
    </li>
  );
}

export interface IJobChartsProps {
  jobId: string;
  /** Its metrics' curves by name and rank, as fetched so far. */
  curves: Curves;
  /** The job has ended and every point is in. */
  complete: boolean;
  /** Whether the first answer came (before it, the charts are loading). */
  loaded: boolean;
  /** Its cost over time, as the sidebar saw it while the job ran (null: none). */
  cost: readonly CostSample[] | null;
}

/** Dollars as the cost chart shows them: to a tenth of a cent. */
function chartUsd(dollars: number): string {
  return formatUsd(BigInt(Math.round(dollars * 1_000_000)), 3);
}

/**
 * The selected job's metrics, a chart per metric with a curve per rank over steps, growing
 * while it runs, and its cost over time (collected while the sidebar was open).
 */
export function JobCharts(
  props: IJobChartsProps & { trans: TranslationBundle }
): JSX.Element {
  const { jobId, curves, complete, loaded, cost, trans } = props;
  const costData = React.useMemo(
    () =>
      cost && cost.length > 0
        ? costChart(trans.__('cost over time'), cost, trans.__('cost'))
        : null,
    [cost, trans]
  );
  const names = Object.keys(curves);
  return (
    <div
      className="jp-BurstJobCharts"
      data-job={jobId}
      data-state={complete ? 'complete' : 'live'}
      aria-label={trans.__('Charts of job %1', jobId)}
      role="group"
    >
      <h4 className="jp-BurstJobCharts-title">{trans.__('Metrics')}</h4>
      {names.length === 0 && (
        <p className="jp-BurstEmpty">
          {!loaded
            ? trans.__('Loading…')
            : complete
              ? trans.__('This job logged no metrics.')
              : trans.__(
                  'None yet: burst.log(step=..., name=value) in the cell draws them here.'
                )}
        </p>
      )}
      <MetricsCharts curves={curves} trans={trans} />
      {costData && (
        <div className="jp-BurstJobCharts-cost">
          <Chart
            chart={costData}
            xLabel={trans.__('seconds')}
            format={chartUsd}
            fromZero
            trans={trans}
          />
        </div>
      )}
    </div>
  );
}

export interface ILogViewProps {
  jobId: string;
  lines: readonly ILogLine[];
  /** Lines the view left out (a flood, or older than the view keeps); the ledger has them. */
  dropped: number;
  ranks: readonly number[];
  rank: number | null;
  search: string;
  following: boolean;
  state: 'connecting' | 'live' | 'ended' | 'error';
  error: string | null;
  onRank: (rank: number | null) => void;
  onSearch: (text: string) => void;
  onFollow: (following: boolean) => void;
}

export function LogView(
  props: ILogViewProps & { trans: TranslationBundle }
): JSX.Element {
  const {
    lines,
    dropped,
    ranks,
    rank,
    search,
    following,
    state,
    error,
    trans
  } = props;
  const scroller = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    if (following && scroller.current) {
      scroller.current.scrollTop = scroller.current.scrollHeight;
    }
  });
  return (
    <div className="jp-BurstLog" data-job={props.jobId}>
      <div className="jp-BurstLog-toolbar">
        <Button
          small
          className="jp-mod-styled jp-BurstLog-follow"
          aria-pressed={following}
          onClick={() => props.onFollow(!following)}
        >
          {following ? trans.__('Pause') : trans.__('Follow')}
        </Button>
        <label>
          {trans.__('rank')}{' '}
          <HTMLSelect
            className="jp-BurstLog-rank"
            value={rank === null ? '' : String(rank)}
            options={[
              { value: '', label: trans.__('all') },
              ...ranks.map(r => ({ value: String(r), label: String(r) }))
            ]}
            onChange={event =>
              props.onRank(
                event.target.value === '' ? null : Number(event.target.value)
              )
            }
            aria-label={trans.__('Show the lines of rank')}
          />
        </label>
        <input
          type="search"
          className="jp-mod-styled jp-BurstLog-search"
          placeholder={trans.__('search')}
          value={search}
          onChange={event => props.onSearch(event.target.value)}
          aria-label={trans.__('Search the log')}
        />
        <span className={`jp-BurstLog-state jp-mod-${state}`}>{state}</span>
      </div>
      {error && <p className="jp-BurstLog-error">{error}</p>}
      {dropped > 0 && (
        <p className="jp-BurstLog-dropped" role="status">
          {trans._n(
            '%2 earlier line not shown here (too many to display); every line is kept in the ledger.',
            '%2 earlier lines not shown here (too many to display); every line is kept in the ledger.',
            dropped,
            dropped.toLocaleString('en-US')
          )}
        </p>
      )}
      <pre
        className="jp-BurstLog-lines"
        ref={scroller}
        tabIndex={0}
        aria-label={trans.__('Log lines')}
      >
        {lines.map((line, index) => (
          <div key={index} className={`jp-BurstLog-line jp-mod-${line.stream}`}>
            {ranks.length > 1 && (
              <span className="jp-BurstLog-rank">[{line.rank}] </span>
            )}
            {line.text}
          </div>
        ))}
      </pre>
    </div>
  );
}
