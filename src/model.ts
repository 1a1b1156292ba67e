/**
 * What the jupyter-burst server extension answers, and the pure logic the sidebar builds
 * on it: money that ticks without drift, and a bounded log view. No DOM, no JupyterLab at
 * run time (a translation bundle is passed in), so that the unit tests run it directly.
 */

import type { TranslationBundle } from '@jupyterlab/translation';

/** An amount as the server sends it: the figure to the cent and the exact decimal. */
export interface IMoney {
  usd: string;
  exact: string;
}

/** A spend: its total, and the part that is notional (local machines' internal price). */
export interface ISpend extends IMoney {
  notional: IMoney;
  shown: string;
}

export interface ICluster {
  id: string;
  name: string;
  provider: string;
  state: 'running' | 'stopped';
  stop_reason: string | null;
  nodes: number;
  gpus: number;
  /** Slots without a GPU (the local provider's stand-ins on a machine without CUDA). */
  cpu_slots: number;
  started: number;
  uptime_seconds: number;
  idle_minutes: number | null;
  idle_remaining_seconds: number | null;
  busy: boolean | null;
  per_hour: ISpend;
  so_far: ISpend;
  /** A running cluster's slots as its heartbeats last sampled them ([] otherwise). */
  usage?: ISlotUsage[];
  /**
   * Where this server shows the cluster's Dask dashboard (a path with the server's base
   * URL): for a running cluster on TLS; null otherwise.
   */
  dashboard_url?: string | null;
}

/** One slot of a running cluster, as its worker's heartbeat last sampled it. */
export interface ISlotUsage {
  worker: string;
  host: string;
  /** "cuda:N", or "cpu" for a CPU stand-in slot. */
  device: string;
  /** The GPU's name, or "CPU slot". */
  label: string;
  /** Whether the slot runs a task now. */
  busy: boolean;
  cpu_percent: number | null;
  /** The worker process's resident memory (bytes). */
  rss: number | null;
  host_cpu_percent: number | null;
  host_memory_used: number | null;
  host_memory_total: number | null;
  /** The GPU's (null on a CPU slot): utilisation in percent, memory in bytes. */
  gpu_utilization: number | null;
  gpu_memory_used: number | null;
  gpu_memory_total: number | null;
  /** A GPU under 10% while its slot runs a task: paid for, unused. */
  idle_gpu: boolean;
}

/** One phase of a cluster start, as the server sends it (clusters/start_phases.py). */
export interface IStartPhase {
  phase: string;
  /** The phase with its detail and progress: "booting", "workers joined 1/2". */
  label: string;
  detail: string;
  done: number | null;
  total: number | null;
  started: number;
  /** Seconds it took, or so far when it is `current` (the phase under way). */
  seconds: number;
  current: boolean;
}

/** A cluster start: quote → launching k/N → booting → environment → workers joined → running. */
export interface IStart {
  id: string;
  name: string;
  provider: string;
  /** `cell`, or `prewarm` for one the extension started while its cell was written. */
  purpose: string;
  state: 'starting' | 'running' | 'failed' | 'abandoned';
  cluster_id: string | null;
  error: string | null;
  started: number;
  ended: number | null;
  seconds: number;
  phases: IStartPhase[];
}

export interface ICost {
  now: number;
  running: { per_hour: ISpend; so_far: ISpend };
  jobs: { id: string; status: string; cost: ISpend }[];
  today: ISpend;
  month: ISpend;
  budget: { left: IMoney; daily: IMoney } | null;
}

export interface IJob {
  id: string;
  name: string | null;
  background: boolean;
  status: string;
  stop_reason: string | null;
  error: string | null;
  kernel: string;
  /** The notebook whose kernel ran it (the server's path), when known. */
  notebook: string | null;
  /** The cell's execution count in its kernel (`[5]`), when known. */
  cell_number?: number | null;
  /** The cluster it ran on, by name. */
  cluster?: string | null;
  /** The cell's first line (an excerpt). */
  cell: string;
  started: number;
  ended: number | null;
  duration_seconds: number;
  cost: ISpend;
}

export interface ICheckpoint {
  job: string;
  name: string;
  step: number | null;
  time: number;
  bytes: number;
  sha256: string;
  format: string;
  cell: string;
  restore: string;
}

export interface ILogLine {
  ts: number;
  rank: number;
  stream: string;
  text: string;
}

/** A websocket message of `jobs/<id>/logs/stream`. */
export interface ILogMessage {
  job?: string;
  lines?: ILogLine[];
  next?: number;
  dropped?: number;
  status?: string;
  end?: boolean;
  error?: string;
}

// Money ----------------------------------------------------------------------------------

const MICRO = 1_000_000n;

/**
 * An exact decimal string ("1.2345") as whole millionths of a dollar; the figures only
 * ever meet as integers, so a total that ticks for hours does not drift.
 */
export function toMicros(exact: string): bigint {
  const match = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(exact.trim());
  if (!match || (!match[2] && !match[3])) {
    throw new Error(`not a decimal amount: '${exact}'`);
  }
  const [, sign, whole, fraction = '', exponent = '0'] = match;
  const digits = BigInt((whole || '0') + fraction);
  // value = digits * 10^shift millionths; a negative shift divides, rounding half up.
  const shift = 6 - fraction.length + Number(exponent);
  let micros: bigint;
  if (shift >= 0) {
    micros = digits * 10n ** BigInt(shift);
  } else {
    const divisor = 10n ** BigInt(-shift);
    micros = digits / divisor + (2n * (digits % divisor) >= divisor ? 1n : 0n);
  }
  return sign === '-' ? -micros : micros;
}

/** Millionths of a dollar shown as dollars with `decimals` places ("$1.23", "$0.0042"). */
export function formatUsd(micros: bigint, decimals = 2): string {
  const negative = micros < 0n;
  const value = negative ? -micros : micros;
  const step = 10n ** BigInt(6 - decimals);
  const rounded = (value + step / 2n) / step; // half up
  const unit = 10n ** BigInt(decimals);
  const whole = (rounded / unit)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const part =
    decimals > 0
      ? '.' + (rounded % unit).toString().padStart(decimals, '0')
      : '';
  return `${negative ? '-' : ''}$${whole}${part}`;
}

/**
 * What has been spent `elapsedSeconds` after the server's figure `soFar` was taken, at
 * `perHour` (both exact decimal strings), in millionths of a dollar.
 */
export function tickedMicros(
  soFar: string,
  perHour: string,
  elapsedSeconds: number
): bigint {
  const since = Math.max(0, Math.floor(elapsedSeconds * 1000));
  return toMicros(soFar) + (toMicros(perHour) * BigInt(since)) / 3_600_000n;
}

/** Decimals to show a running cost with: enough that a cheap cluster visibly ticks. */
export function tickDecimals(perHour: string): number {
  const rate = toMicros(perHour);
  if (rate === 0n) {
    return 2;
  }
  // Cents per second or more: cents are enough; else show down to a tenth of a cent/s.
  return rate >= 36n * MICRO ? 2 : 4;
}

// Time -----------------------------------------------------------------------------------

/** "1 GPU", "8 GPUs", "2 CPU slots", "4 GPUs + 1 CPU slot". */
export function formatSlots(gpus: number, cpuSlots: number): string {
  const plural = (n: number, word: string) =>
    `${n} ${word}${n === 1 ? '' : 's'}`;
  const parts = [];
  if (gpus > 0 || cpuSlots === 0) {
    parts.push(plural(gpus, 'GPU'));
  }
  if (cpuSlots > 0) {
    parts.push(plural(cpuSlots, 'CPU slot'));
  }
  return parts.join(' + ');
}

/** "42 s", "3 min 5 s", "2 h 07 min". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  const minutes = Math.floor(s / 60) % 60;
  return `${Math.floor(s / 3600)} h ${String(minutes).padStart(2, '0')} min`;
}

/** "0.4 s", "12 s", "4 min 05 s": tenths while they matter (as the kernel's line shows). */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 10) {
    return `${s.toFixed(1)} s`;
  }
  const whole = Math.floor(s);
  if (whole < 60) {
    return `${whole} s`;
  }
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
  }
  return formatDuration(whole);
}

/**
 * Each phase of a start with its seconds ("booting 2.3 s"); the phase under way, and the
 * start while it is under way, go on counting `elapsedSeconds` after the server's figures.
 */
export function startPhases(
  start: IStart,
  elapsedSeconds: number
): { label: string; seconds: string; current: boolean }[] {
  const extra = start.state === 'starting' ? Math.max(0, elapsedSeconds) : 0;
  return start.phases.map(phase => ({
    label: phase.label,
    seconds: formatSeconds(phase.seconds + (phase.current ? extra : 0)),
    current: phase.current
  }));
}

/** "started in 3.1 s", "starting for 12 s", "failed after 40 s", "abandoned after 2.0 s". */
export function startSummary(
  start: IStart,
  elapsedSeconds: number,
  trans: TranslationBundle
): string {
  const extra = start.state === 'starting' ? Math.max(0, elapsedSeconds) : 0;
  const took = formatSeconds(start.seconds + extra);
  switch (start.state) {
    case 'starting':
      return trans.__('starting for %1', took);
    case 'running':
      return trans.__('started in %1', took);
    case 'failed':
      return trans.__('failed after %1', took);
    default:
      return trans.__('abandoned after %1', took);
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

// Logs -----------------------------------------------------------------------------------

/** The lines the sidebar keeps for one job (older ones leave the view, never the ledger). */
export const LOG_VIEW_LINES = 5000;

/**
 * A bounded list of a job's log lines, newest last. What leaves the view is counted, so
 * the sidebar can say so: lines the server did not send (`dropped` in its messages) and
 * lines pushed out here by newer ones.
 */
export class LogBuffer {
  constructor(readonly capacity: number = LOG_VIEW_LINES) {}

  /** Add a websocket message's lines; returns whether anything changed. */
  add(message: ILogMessage): boolean {
    let changed = false;
    if (message.dropped) {
      this.dropped += message.dropped;
      changed = true;
    }
    for (const line of message.lines ?? []) {
      this._lines.push(line);
      this.ranks.add(line.rank);
      changed = true;
    }
    const over = this._lines.length - this.capacity;
    if (over > 0) {
      this._lines.splice(0, over);
      this.dropped += over;
    }
    return changed;
  }

  get lines(): readonly ILogLine[] {
    return this._lines;
  }

  /** The lines of `rank` (all ranks when null) containing `search` (any case). */
  view(rank: number | null, search: string): ILogLine[] {
    const needle = search.toLowerCase();
    return this._lines.filter(
      line =>
        (rank === null || line.rank === rank) &&
        (needle === '' || line.text.toLowerCase().includes(needle))
    );
  }

  clear(): void {
    this._lines = [];
    this.dropped = 0;
    this.ranks.clear();
  }

  dropped = 0;
  readonly ranks = new Set<number>();
  private _lines: ILogLine[] = [];
}
