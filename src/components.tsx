/**
 * The sidebar's sections as React components of plain props: what to show and what to
 * call. They fetch nothing themselves (see store.ts), so the unit tests render them alone.
 */

import * as React from 'react';

import {
  formatBytes,
  formatDuration,
  formatSlots,
  formatUsd,
  ICheckpoint,
  ICluster,
  ICost,
  IJob,
  ILogLine,
  IStart,
  startPhases,
  startSummary,
  tickDecimals,
  tickedMicros,
  toMicros
} from './model';

/** A figure that is still going up: the server's, plus `perHour` since it was taken. */
export function tickingUsd(
  soFar: string,
  perHour: string,
  fetchedAt: number,
  now: number
): string {
  const micros = tickedMicros(soFar, perHour, (now - fetchedAt) / 1000);
  return formatUsd(micros, tickDecimals(perHour));
}

// Clusters & cost --------------------------------------------------------------------------

export interface IClustersProps {
  clusters: ICluster[];
  cost: ICost | null;
  /** When the figures were fetched, and the time now (ms since the epoch). */
  fetchedAt: number;
  now: number;
  /** Clusters with a stop on its way (their button says so and is disabled). */
  stopping: ReadonlySet<string>;
  /** By the cluster's id: a name may run on several providers (`default` on each). */
  onStop: (id: string) => void;
  onIdle: (id: string, minutes: number) => void;
  /** Cluster starts, newest first: those under way are shown live, phase by phase. */
  starts?: IStart[];
}

export function ClustersSection(props: IClustersProps): JSX.Element {
  const { clusters, cost, fetchedAt, now } = props;
  const starts = props.starts ?? [];
  const running = clusters.filter(c => c.state === 'running');
  const stopped = clusters.filter(c => c.state !== 'running');
  const starting = starts.filter(s => s.state === 'starting');
  return (
    <section className="jp-BurstSection jp-BurstClusters" aria-label="Clusters and cost">
      <h3 className="jp-BurstSection-title">Clusters &amp; cost</h3>
      {cost && (
        <div className="jp-BurstCost">
          {running.length > 0 && (
          <div className="jp-BurstCost-live" aria-live="off">
            <span className="jp-BurstCost-label">running now</span>{' '}
            <span className="jp-BurstCost-figure" data-testid="live-cost">
              {tickingUsd(
                cost.running.so_far.exact,
                cost.running.per_hour.exact,
                fetchedAt,
                now
              )}
            </span>{' '}
            <span className="jp-BurstCost-rate">at {cost.running.per_hour.usd}/h</span>
          </div>
          )}
          <div className="jp-BurstCost-totals">
            today {cost.today.usd} · month {cost.month.usd}
            {cost.budget && (
              <span className="jp-BurstCost-budget">
                {' '}
                · budget left {cost.budget.left.usd} of {cost.budget.daily.usd}/day
              </span>
            )}
          </div>
        </div>
      )}
      {running.length === 0 && starting.length === 0 && (
        <p className="jp-BurstEmpty">No cluster is running.</p>
      )}
      {starting.length > 0 && (
        <ul className="jp-BurstList jp-BurstStarts" aria-label="Clusters starting">
          {starting.map(start => (
            <li
              key={start.id}
              className="jp-BurstCluster jp-BurstStart jp-mod-starting"
              data-cluster={start.name}
            >
              <div className="jp-BurstCluster-head">
                <span className="jp-BurstCluster-name">{start.name}</span>
                <span className="jp-BurstCluster-provider">{start.provider}</span>
              </div>
              <StartPhases start={start} elapsed={(now - fetchedAt) / 1000} />
            </li>
          ))}
        </ul>
      )}
      <ul className="jp-BurstList">
        {running.map(cluster => (
          <ClusterRow
            key={cluster.id}
            cluster={cluster}
            start={starts.find(s => s.cluster_id === cluster.id)}
            {...props}
          />
        ))}
      </ul>
      {stopped.length > 0 && (
        <details className="jp-BurstStopped">
          <summary>Stopped today ({stopped.length})</summary>
          <ul className="jp-BurstList">
            {stopped.map(cluster => (
              <li key={cluster.id} className="jp-BurstCluster jp-mod-stopped">
                <span className="jp-BurstCluster-name">{cluster.name}</span> {cluster.provider}{' '}
                · ran {formatDuration(cluster.uptime_seconds)} · {cluster.so_far.usd}
                {cluster.stop_reason ? ` · ${cluster.stop_reason}` : ''}
              </li>
            ))}
          </ul>
        </details>
      )}
    </section>
  );
}

/**
 * Where a start spends its time: "starting for 12 s", then each phase with its seconds,
 * the one under way marked and counting.
 */
export function StartPhases(props: { start: IStart; elapsed: number }): JSX.Element {
  const { start, elapsed } = props;
  return (
    <div className={`jp-BurstStart-phases jp-mod-${start.state}`} data-start={start.id}>
      {start.purpose === 'prewarm' && (
        <>
          <span
            className="jp-BurstStart-purpose"
            title="Started while its cell was being written (burst.prewarm)"
          >
            pre-warm
          </span>{' '}
        </>
      )}
      <span className="jp-BurstStart-summary">{startSummary(start, elapsed)}</span>
      {start.phases.length > 0 && ': '}
      <ol className="jp-BurstStart-list" aria-label={`Start phases of ${start.name}`}>
        {startPhases(start, elapsed).map((phase, index) => (
          <li
            key={index}
            className={`jp-BurstStart-phase${phase.current ? ' jp-mod-current' : ''}`}
            aria-current={phase.current ? 'step' : undefined}
          >
            {phase.label} {phase.seconds}
          </li>
        ))}
        {start.state === 'running' && <li className="jp-BurstStart-phase">running</li>}
      </ol>
      {start.error && <span className="jp-BurstStart-error"> · {start.error}</span>}
    </div>
  );
}

function ClusterRow(props: IClustersProps & { cluster: ICluster; start?: IStart }): JSX.Element {
  const { cluster, start, fetchedAt, now, stopping, onStop, onIdle } = props;
  const [idle, setIdle] = React.useState<string>('');
  const elapsed = (now - fetchedAt) / 1000;
  const isStopping = stopping.has(cluster.id);
  let countdown = 'idle countdown unknown';
  if (cluster.busy) {
    countdown = 'busy';
  } else if (cluster.idle_remaining_seconds !== null) {
    countdown = `stops in ${formatDuration(cluster.idle_remaining_seconds - elapsed)} if idle`;
  }
  const submitIdle = (event: React.FormEvent) => {
    event.preventDefault();
    const minutes = Number(idle);
    if (idle !== '' && Number.isFinite(minutes) && minutes > 0) {
      onIdle(cluster.id, minutes);
      setIdle('');
    }
  };
  return (
    <li className="jp-BurstCluster" data-cluster={cluster.name}>
      <div className="jp-BurstCluster-head">
        <span className="jp-BurstCluster-name">{cluster.name}</span>
        <span className="jp-BurstCluster-provider">{cluster.provider}</span>
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-warn jp-BurstCluster-stop"
          disabled={isStopping}
          onClick={() => onStop(cluster.id)}
          aria-label={`Stop cluster ${cluster.name} now`}
        >
          {isStopping ? 'Stopping…' : 'Stop'}
        </button>
      </div>
      <div className="jp-BurstCluster-facts">
        {cluster.nodes} node{cluster.nodes === 1 ? '' : 's'} ·{' '}
        {formatSlots(cluster.gpus, cluster.cpu_slots)} · up{' '}
        {formatDuration(cluster.uptime_seconds + elapsed)}{' '}
        · {countdown}
      </div>
      <div className="jp-BurstCluster-cost">
        <span data-testid="cluster-cost">
          {tickingUsd(cluster.so_far.exact, cluster.per_hour.exact, fetchedAt, now)}
        </span>{' '}
        so far at {cluster.per_hour.usd}/h
        {toMicros(cluster.per_hour.notional.exact) > 0n
          ? ' (notional)'
          : ''}
      </div>
      {start && <StartPhases start={start} elapsed={(now - fetchedAt) / 1000} />}
      <form className="jp-BurstCluster-idle" onSubmit={submitIdle}>
        <label>
          idle after{' '}
          <input
            type="number"
            min="0.1"
            step="any"
            inputMode="decimal"
            className="jp-mod-styled"
            placeholder={String(cluster.idle_minutes ?? '')}
            value={idle}
            onChange={event => setIdle(event.target.value)}
            aria-label={`Idle timeout of ${cluster.name} in minutes`}
          />{' '}
          min
        </label>{' '}
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept">
          Set
        </button>
      </form>
    </li>
  );
}

// Jobs & logs -----------------------------------------------------------------------------

export interface IJobsProps {
  jobs: IJob[];
  selected: string | null;
  onSelect: (jobId: string | null) => void;
  onCancel: (jobId: string) => void;
  cancelling: ReadonlySet<string>;
  /** The selected job's log view. */
  log: ILogViewProps | null;
}

export function JobsSection(props: IJobsProps): JSX.Element {
  const { jobs, selected, onSelect, onCancel, cancelling, log } = props;
  return (
    <section className="jp-BurstSection jp-BurstJobs" aria-label="Jobs and logs">
      <h3 className="jp-BurstSection-title">Jobs &amp; logs</h3>
      {jobs.length === 0 && <p className="jp-BurstEmpty">No job has run yet.</p>}
      <ul className="jp-BurstList" role="listbox" aria-label="Jobs">
        {jobs.map(job => (
          <li
            key={job.id}
            className={`jp-BurstJob jp-mod-${job.status}${
              job.id === selected ? ' jp-mod-selected' : ''
            }`}
            data-job={job.id}
            role="option"
            aria-selected={job.id === selected}
            tabIndex={0}
            onClick={() => onSelect(job.id === selected ? null : job.id)}
            onKeyDown={event => {
              if (event.key === 'Enter' || event.key === ' ') {
                event.preventDefault();
                onSelect(job.id === selected ? null : job.id);
              }
            }}
          >
            <div className="jp-BurstJob-head">
              <span className="jp-BurstJob-status">{job.status}</span>
              <code className="jp-BurstJob-cell">{job.name ?? job.cell}</code>
            </div>
            <div className="jp-BurstJob-facts">
              {job.notebook ? `${job.notebook} · ` : ''}
              {formatDuration(job.duration_seconds)} · {job.cost.usd}
              {job.error ? ` · ${job.error}` : ''}
              {job.status === 'running' && (
                <button
                  type="button"
                  className="jp-Button jp-mod-styled jp-mod-warn jp-BurstJob-cancel"
                  disabled={cancelling.has(job.id)}
                  onClick={event => {
                    event.stopPropagation();
                    onCancel(job.id);
                  }}
                  aria-label={`Cancel job ${job.name ?? job.id}`}
                >
                  {cancelling.has(job.id) ? 'Cancelling…' : 'Cancel'}
                </button>
              )}
            </div>
          </li>
        ))}
      </ul>
      {log && <LogView {...log} />}
    </section>
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

export function LogView(props: ILogViewProps): JSX.Element {
  const { lines, dropped, ranks, rank, search, following, state, error } = props;
  const scroller = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    if (following && scroller.current) {
      scroller.current.scrollTop = scroller.current.scrollHeight;
    }
  });
  return (
    <div className="jp-BurstLog" data-job={props.jobId}>
      <div className="jp-BurstLog-toolbar">
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-BurstLog-follow"
          aria-pressed={following}
          onClick={() => props.onFollow(!following)}
        >
          {following ? 'Pause' : 'Follow'}
        </button>
        <label>
          rank{' '}
          <select
            className="jp-mod-styled jp-BurstLog-rank"
            value={rank === null ? '' : String(rank)}
            onChange={event =>
              props.onRank(event.target.value === '' ? null : Number(event.target.value))
            }
            aria-label="Show the lines of rank"
          >
            <option value="">all</option>
            {ranks.map(r => (
              <option key={r} value={String(r)}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <input
          type="search"
          className="jp-mod-styled jp-BurstLog-search"
          placeholder="search"
          value={search}
          onChange={event => props.onSearch(event.target.value)}
          aria-label="Search the log"
        />
        <span className={`jp-BurstLog-state jp-mod-${state}`}>{state}</span>
      </div>
      {error && <p className="jp-BurstLog-error">{error}</p>}
      {dropped > 0 && (
        <p className="jp-BurstLog-dropped" role="status">
          {dropped.toLocaleString('en-US')} earlier line{dropped === 1 ? '' : 's'} not shown
          here (too many to display); every line is kept in the ledger.
        </p>
      )}
      <pre className="jp-BurstLog-lines" ref={scroller} tabIndex={0} aria-label="Log lines">
        {lines.map((line, index) => (
          <div key={index} className={`jp-BurstLog-line jp-mod-${line.stream}`}>
            {ranks.length > 1 && <span className="jp-BurstLog-rank">[{line.rank}] </span>}
            {line.text}
          </div>
        ))}
      </pre>
    </div>
  );
}

// Checkpoints -----------------------------------------------------------------------------

export interface ICheckpointsProps {
  checkpoints: ICheckpoint[];
  downloadUrl: (checkpoint: ICheckpoint) => string;
  onRestore: (checkpoint: ICheckpoint) => void;
}

export function CheckpointsSection(props: ICheckpointsProps): JSX.Element {
  const newestFirst = [...props.checkpoints].reverse();
  return (
    <section className="jp-BurstSection jp-BurstCheckpoints" aria-label="Checkpoints">
      <h3 className="jp-BurstSection-title">Checkpoints</h3>
      {newestFirst.length === 0 && <p className="jp-BurstEmpty">No checkpoint yet.</p>}
      <ul className="jp-BurstList">
        {newestFirst.map(checkpoint => (
          <li
            key={`${checkpoint.job}/${checkpoint.name}`}
            className="jp-BurstCheckpoint"
            data-job={checkpoint.job}
            data-step={checkpoint.step ?? ''}
          >
            <div className="jp-BurstCheckpoint-head">
              <span className="jp-BurstCheckpoint-step">
                step {checkpoint.step ?? '–'}
              </span>{' '}
              <code>{checkpoint.job}</code> · {formatBytes(checkpoint.bytes)} ·{' '}
              {new Date(checkpoint.time * 1000).toLocaleString()}
            </div>
            <div className="jp-BurstCheckpoint-cell">
              <code>{checkpoint.cell}</code>
            </div>
            <div className="jp-BurstCheckpoint-actions">
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-accept jp-BurstCheckpoint-restore"
                onClick={() => props.onRestore(checkpoint)}
                title={`Insert "${checkpoint.restore} as state" in a new cell below the active one`}
              >
                Restore
              </button>{' '}
              <a
                className="jp-BurstCheckpoint-download"
                href={props.downloadUrl(checkpoint)}
                download
              >
                Download
              </a>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}
