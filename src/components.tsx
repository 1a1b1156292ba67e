/**
 * The sidebar's "Clusters & cost" and "Checkpoints" sections (jobs.tsx has "Jobs & logs")
 * as React components of plain props: what to show and what to call. They fetch nothing
 * themselves (see store.ts), so the unit tests render them alone.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import {
  formatBytes,
  formatDuration,
  formatSlots,
  formatUsd,
  ICheckpoint,
  ICluster,
  ICost,
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
  /** Open the Dask dashboard of a cluster (by name) at its row's `dashboard_url`. */
  onDashboard?: (name: string, url: string) => void;
  /** Cluster starts, newest first: those under way are shown live, phase by phase. */
  starts?: IStart[];
  trans: TranslationBundle;
}

export function ClustersSection(props: IClustersProps): JSX.Element {
  const { clusters, cost, fetchedAt, now, trans } = props;
  const starts = props.starts ?? [];
  const running = clusters.filter(c => c.state === 'running');
  const stopped = clusters.filter(c => c.state !== 'running');
  const starting = starts.filter(s => s.state === 'starting');
  return (
    <section
      className="jp-BurstSection jp-BurstClusters"
      aria-label={trans.__('Clusters and cost')}
    >
      <h3 className="jp-BurstSection-title">{trans.__('Clusters & cost')}</h3>
      {cost && (
        <div className="jp-BurstCost">
          {running.length > 0 && (
            <div className="jp-BurstCost-live" aria-live="off">
              <span className="jp-BurstCost-label">
                {trans.__('running now')}
              </span>{' '}
              <span className="jp-BurstCost-figure" data-testid="live-cost">
                {tickingUsd(
                  cost.running.so_far.exact,
                  cost.running.per_hour.exact,
                  fetchedAt,
                  now
                )}
              </span>{' '}
              <span className="jp-BurstCost-rate">
                {trans.__('at %1/h', cost.running.per_hour.usd)}
              </span>
            </div>
          )}
          <div className="jp-BurstCost-totals">
            {trans.__('today %1 · month %2', cost.today.usd, cost.month.usd)}
            {cost.budget && (
              <span className="jp-BurstCost-budget">
                {' · '}
                {trans.__(
                  'budget left %1 of %2/day',
                  cost.budget.left.usd,
                  cost.budget.daily.usd
                )}
              </span>
            )}
          </div>
        </div>
      )}
      {running.length === 0 && starting.length === 0 && (
        <p className="jp-BurstEmpty">{trans.__('No cluster is running.')}</p>
      )}
      {starting.length > 0 && (
        <ul
          className="jp-BurstList jp-BurstStarts"
          aria-label={trans.__('Clusters starting')}
        >
          {starting.map(start => (
            <li
              key={start.id}
              className="jp-BurstCluster jp-BurstStart jp-mod-starting"
              data-cluster={start.name}
            >
              <div className="jp-BurstCluster-head">
                <span className="jp-BurstCluster-name">{start.name}</span>
                <span className="jp-BurstCluster-provider">
                  {start.provider}
                </span>
              </div>
              <StartPhases
                start={start}
                elapsed={(now - fetchedAt) / 1000}
                trans={trans}
              />
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
          <summary>{trans.__('Stopped today (%1)', stopped.length)}</summary>
          <ul className="jp-BurstList">
            {stopped.map(cluster => (
              <li key={cluster.id} className="jp-BurstCluster jp-mod-stopped">
                <span className="jp-BurstCluster-name">{cluster.name}</span>{' '}
                {cluster.provider} ·{' '}
                {trans.__('ran %1', formatDuration(cluster.uptime_seconds))} ·{' '}
                {cluster.so_far.usd}
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
export function StartPhases(props: {
  start: IStart;
  elapsed: number;
  trans: TranslationBundle;
}): JSX.Element {
  const { start, elapsed, trans } = props;
  return (
    <div
      className={`jp-BurstStart-phases jp-mod-${start.state}`}
      data-start={start.id}
    >
      {start.purpose === 'prewarm' && (
        <>
          <span
            className="jp-BurstStart-purpose"
            title={trans.__(
              'Started while its cell was being written (burst.prewarm)'
            )}
          >
            {trans.__('pre-warm')}
          </span>{' '}
        </>
      )}
      <span className="jp-BurstStart-summary">
        {startSummary(start, elapsed, trans)}
      </span>
      {start.phases.length > 0 && ': '}
      <ol
        className="jp-BurstStart-list"
        aria-label={trans.__('Start phases of %1', start.name)}
      >
        {startPhases(start, elapsed).map((phase, index) => (
          <li
            key={index}
            className={`jp-BurstStart-phase${phase.current ? ' jp-mod-current' : ''}`}
            aria-current={phase.current ? 'step' : undefined}
          >
            {phase.label} {phase.seconds}
          </li>
        ))}
        {start.state === 'running' && (
          <li className="jp-BurstStart-phase">{trans.__('running')}</li>
        )}
      </ol>
      {start.error && (
        <span className="jp-BurstStart-error"> · {start.error}</span>
      )}
    </div>
  );
}

function ClusterRow(
  props: IClustersProps & { cluster: ICluster; start?: IStart }
): JSX.Element {
  const { cluster, start, fetchedAt, now, stopping, onStop, onIdle, trans } =
    props;
  const { onDashboard } = props;
  const dashboardUrl = cluster.dashboard_url;
  const [idle, setIdle] = React.useState<string>('');
  const elapsed = (now - fetchedAt) / 1000;
  const isStopping = stopping.has(cluster.id);
  let countdown = trans.__('idle countdown unknown');
  if (cluster.busy) {
    countdown = trans.__('busy');
  } else if (cluster.idle_remaining_seconds !== null) {
    countdown = trans.__(
      'stops in %1 if idle',
      formatDuration(cluster.idle_remaining_seconds - elapsed)
    );
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
        {onDashboard && typeof dashboardUrl === 'string' && (
          <Button
            small
            className="jp-mod-styled jp-BurstCluster-dashboard"
            onClick={() => onDashboard(cluster.name, dashboardUrl)}
            aria-label={trans.__('Dask dashboard of cluster %1', cluster.name)}
            title={trans.__(
              'Open the Dask dashboard of cluster %1 in a tab',
              cluster.name
            )}
          >
            {trans.__('Dashboard')}
          </Button>
        )}
        <Button
          small
          className="jp-mod-styled jp-mod-warn jp-BurstCluster-stop"
          disabled={isStopping}
          onClick={() => onStop(cluster.id)}
          aria-label={trans.__('Stop cluster %1 now', cluster.name)}
        >
          {isStopping ? trans.__('Stopping…') : trans.__('Stop')}
        </Button>
      </div>
      <div className="jp-BurstCluster-facts">
        {trans._n('%1 node', '%1 nodes', cluster.nodes)} ·{' '}
        {formatSlots(cluster.gpus, cluster.cpu_slots)} ·{' '}
        {trans.__('up %1', formatDuration(cluster.uptime_seconds + elapsed))} ·{' '}
        {countdown}
      </div>
      <div className="jp-BurstCluster-cost">
        <span data-testid="cluster-cost">
          {tickingUsd(
            cluster.so_far.exact,
            cluster.per_hour.exact,
            fetchedAt,
            now
          )}
        </span>{' '}
        {trans.__('so far at %1/h', cluster.per_hour.usd)}
        {toMicros(cluster.per_hour.notional.exact) > 0n
          ? ` ${trans.__('(notional)')}`
          : ''}
      </div>
      {start && (
        <StartPhases
          start={start}
          elapsed={(now - fetchedAt) / 1000}
          trans={trans}
        />
      )}
      <form className="jp-BurstCluster-idle" onSubmit={submitIdle}>
        <label>
          {trans.__('idle after')}{' '}
          <input
            type="number"
            min="0.1"
            step="any"
            inputMode="decimal"
            className="jp-mod-styled"
            placeholder={String(cluster.idle_minutes ?? '')}
            value={idle}
            onChange={event => setIdle(event.target.value)}
            aria-label={trans.__('Idle timeout of %1 in minutes', cluster.name)}
          />{' '}
          {trans.__('min')}
        </label>{' '}
        <Button small type="submit" className="jp-mod-styled jp-mod-accept">
          {trans.__('Set')}
        </Button>
      </form>
    </li>
  );
}

// Checkpoints -----------------------------------------------------------------------------

export interface ICheckpointsProps {
  checkpoints: ICheckpoint[];
  downloadUrl: (checkpoint: ICheckpoint) => string;
  onRestore: (checkpoint: ICheckpoint) => void;
  trans: TranslationBundle;
}

export function CheckpointsSection(props: ICheckpointsProps): JSX.Element {
  const { trans } = props;
  const newestFirst = [...props.checkpoints].reverse();
  return (
    <section
      className="jp-BurstSection jp-BurstCheckpoints"
      aria-label={trans.__('Checkpoints')}
    >
      <h3 className="jp-BurstSection-title">{trans.__('Checkpoints')}</h3>
      {newestFirst.length === 0 && (
        <p className="jp-BurstEmpty">{trans.__('No checkpoint yet.')}</p>
      )}
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
                {trans.__('step %1', checkpoint.step ?? '–')}
              </span>{' '}
              <code>{checkpoint.job}</code> · {formatBytes(checkpoint.bytes)} ·{' '}
              {new Date(checkpoint.time * 1000).toLocaleString()}
            </div>
            <div className="jp-BurstCheckpoint-cell">
              <code>{checkpoint.cell}</code>
            </div>
            <div className="jp-BurstCheckpoint-actions">
              <Button
                small
                className="jp-mod-styled jp-mod-accept jp-BurstCheckpoint-restore"
                onClick={() => props.onRestore(checkpoint)}
                title={trans.__(
                  'Insert "%1 as state" in a new cell below the active one',
                  checkpoint.restore
                )}
              >
                {trans.__('Restore')}
              </Button>{' '}
              <a
                className="jp-BurstCheckpoint-download"
                href={props.downloadUrl(checkpoint)}
                download
              >
                {trans.__('Download')}
              </a>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}
