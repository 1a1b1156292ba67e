/**
 * The sidebar's "GPU use" section: each slot of the running clusters as its worker's
 * heartbeat last sampled it (the server asks the cluster's head; nothing here asks a
 * machine). A GPU's utilisation and memory as bars, a CPU slot's CPU and memory, and a GPU
 * left idle while its slot runs a task marked, since that is the money most often wasted.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatBytes, ICluster, ISlotUsage } from './model';

export interface IUsageProps {
  clusters: ICluster[];
  trans: TranslationBundle;
}

export function UsageSection(props: IUsageProps): JSX.Element | null {
  const { trans } = props;
  const running = props.clusters.filter(c => c.state === 'running');
  if (running.length === 0) {
    return null;
  }
  return (
    <section
      className="jp-BurstSection jp-BurstUsage"
      aria-label={trans.__('GPU use')}
    >
      <h3 className="jp-BurstSection-title">{trans.__('GPU use')}</h3>
      {running.map(cluster => (
        <div
          key={cluster.id}
          className="jp-BurstUsage-cluster"
          data-cluster={cluster.name}
        >
          {running.length > 1 && (
            <h4 className="jp-BurstUsage-clusterName">{cluster.name}</h4>
          )}
          {(cluster.usage ?? []).length === 0 ? (
            <p className="jp-BurstEmpty">
              {trans.__('No sample from its workers yet.')}
            </p>
          ) : (
            <ul className="jp-BurstList" aria-label={trans.__('Slots')}>
              {cluster.usage!.map(slot => (
                <SlotRow
                  key={`${slot.worker}/${slot.device}`}
                  slot={slot}
                  trans={trans}
                />
              ))}
            </ul>
          )}
        </div>
      ))}
    </section>
  );
}

/** A share (0..100) as a percentage, or "–" when unknown. */
function percent(value: number | null): string {
  return value === null || value === undefined ? '–' : `${Math.round(value)}%`;
}

/** "1.2 GB of 16.0 GB", "1.2 GB" without a total, "–" when unknown. */
function memory(used: number | null, total: number | null): string {
  if (used === null || used === undefined) {
    return '–';
  }
  return total
    ? `${formatBytes(used)} / ${formatBytes(total)}`
    : formatBytes(used);
}

/** A horizontal bar of `value` out of 100, with its figure. */
function Bar(props: {
  label: string;
  value: number | null;
  text: string;
  kind: string;
}): JSX.Element {
  const { label, value, text, kind } = props;
  const share =
    value === null || !Number.isFinite(value)
      ? 0
      : Math.max(0, Math.min(100, value));
  return (
    <div className={`jp-BurstBar jp-mod-${kind}`}>
      <span className="jp-BurstBar-label">{label}</span>
      <span
        className="jp-BurstBar-track"
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(share)}
      >
        <span className="jp-BurstBar-fill" style={{ width: `${share}%` }} />
      </span>
      <span className="jp-BurstBar-text">{text}</span>
    </div>
  );
}

function SlotRow(props: {
  slot: ISlotUsage;
  trans: TranslationBundle;
}): JSX.Element {
  const { slot, trans } = props;
  const gpu = slot.device !== 'cpu' && slot.gpu_utilization !== null;
  const gpuMemoryShare =
    slot.gpu_memory_used !== null && slot.gpu_memory_total
      ? (100 * slot.gpu_memory_used) / slot.gpu_memory_total
      : null;
  return (
    <li
      className={`jp-BurstSlot${gpu ? ' jp-mod-gpu' : ' jp-mod-cpu'}${
        slot.idle_gpu ? ' jp-mod-idleGpu' : ''
      }${slot.busy ? ' jp-mod-busy' : ''}`}
      data-worker={slot.worker}
      data-device={slot.device}
    >
      <div className="jp-BurstSlot-head">
        <span className="jp-BurstSlot-label">
          {gpu ? slot.label : trans.__('CPU slot')}
        </span>{' '}
        <span className="jp-BurstSlot-device">{slot.device}</span>
        {slot.idle_gpu && (
          <span
            className="jp-BurstSlot-idle"
            title={trans.__(
              'Its slot runs a task but the GPU is under 10% busy: paid for, unused'
            )}
          >
            {trans.__('idle GPU')}
          </span>
        )}
        <span className="jp-BurstSlot-state">
          {slot.busy ? trans.__('busy') : trans.__('free')}
        </span>
      </div>
      <div className="jp-BurstSlot-where" title={slot.worker}>
        {trans.__('on %1', slot.host)} · {shortWorker(slot.worker)}
      </div>
      {gpu && (
        <>
          <Bar
            kind="gpu"
            label={trans.__('GPU')}
            value={slot.gpu_utilization}
            text={percent(slot.gpu_utilization)}
          />
          <Bar
            kind="gpuMemory"
            label={trans.__('GPU mem')}
            value={gpuMemoryShare}
            text={memory(slot.gpu_memory_used, slot.gpu_memory_total)}
          />
        </>
      )}
      <Bar
        kind="cpu"
        label={trans.__('CPU')}
        value={slot.cpu_percent}
        text={percent(slot.cpu_percent)}
      />
      <div className="jp-BurstSlot-memory">
        {trans.__('memory %1', memory(slot.rss, null))}
        {slot.host_memory_total ? (
          <>
            {' · '}
            {trans.__(
              'host %1',
              memory(slot.host_memory_used, slot.host_memory_total)
            )}
          </>
        ) : null}
      </div>
    </li>
  );
}

/** "tcp://10.0.0.5:40231" as "10.0.0.5:40231": the worker, short enough for a row. */
function shortWorker(address: string): string {
  return String(address ?? '').replace(/^[a-z]+:\/\//, '');
}
