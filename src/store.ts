import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ICheckpoint, ICluster, ICost, IJob, IStart } from './model';
import { requestAPI } from './request';

/** How often the figures are fetched again while the page is open (ms). */
export const REFRESH_MS = 3000;
/** ... and while a cluster is starting, so that its phases show as they begin (ms). */
export const STARTING_REFRESH_MS = 1000;

/**
 * The sidebar's data: the server extension's views, fetched every few seconds, and its
 * actions. The sidebar, the status bar item and the in-cell cancel buttons share one.
 */
export class BurstStore {
  constructor(readonly serverSettings: ServerConnection.ISettings) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  clusters: ICluster[] = [];
  cost: ICost | null = null;
  jobs: IJob[] = [];
  checkpoints: ICheckpoint[] = [];
  /** Cluster starts of the last day, newest first: those under way, and how the others went. */
  starts: IStart[] = [];
  /** When the figures above were fetched (ms since the epoch, this browser's clock). */
  fetchedAt = Date.now();
  /** The last failure to reach the server (shown in the sidebar), or null. */
  error: string | null = null;
  readonly stopping = new Set<string>();
  readonly cancelling = new Set<string>();

  /** Fetch now, then every `REFRESH_MS` until `dispose()`. */
  start(): void {
    if (this._timer === null) {
      void this.refresh();
      this._timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
    }
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
    if (this._soon !== null) {
      window.clearTimeout(this._soon);
      this._soon = null;
    }
  }

  async refresh(): Promise<void> {
    if (this._inFlight) {
      return this._inFlight;
    }
    this._inFlight = this._fetch().finally(() => {
      this._inFlight = null;
    });
    return this._inFlight;
  }

  private async _fetch(): Promise<void> {
    try {
      const [clusters, cost, jobs, checkpoints, starts] = await Promise.all([
        this._get<ICluster[]>('clusters'),
        this._get<ICost>('cost'),
        this._get<IJob[]>('jobs?limit=50'),
        this._get<ICheckpoint[]>('checkpoints'),
        this._get<IStart[]>('starts?limit=50')
      ]);
      Object.assign(this, { clusters, cost, jobs, checkpoints, starts, error: null });
      this.fetchedAt = Date.now();
      if (this._timer !== null && this._soon === null && starts.some(s => s.state === 'starting')) {
        this._soon = window.setTimeout(() => {
          this._soon = null;
          void this.refresh();
        }, STARTING_REFRESH_MS);
      }
      for (const id of [...this.stopping]) {
        if (!clusters.some(c => c.id === id && c.state === 'running')) {
          this.stopping.delete(id);
        }
      }
      for (const id of [...this.cancelling]) {
        if (!jobs.some(j => j.id === id && j.status === 'running')) {
          this.cancelling.delete(id);
        }
      }
    } catch (reason) {
      this.error = `jupyter-burst server extension: ${message(reason)}`;
    }
    this._changed.emit();
  }

  /** Stop the cluster (by its id) now; resolves once the server says it is gone. */
  async stopCluster(id: string): Promise<void> {
    this.stopping.add(id);
    this._changed.emit();
    await this._act(`clusters/${encodeURIComponent(id)}/stop`, {}, () =>
      this.stopping.delete(id)
    );
  }

  async setIdle(id: string, minutes: number): Promise<void> {
    await this._act(`clusters/${encodeURIComponent(id)}/idle`, { minutes });
  }

  async cancelJob(jobId: string): Promise<void> {
    this.cancelling.add(jobId);
    this._changed.emit();
    await this._act(`jobs/${encodeURIComponent(jobId)}/cancel`, {}, () =>
      this.cancelling.delete(jobId)
    );
  }

  /** The URL that downloads a checkpoint's bytes (the browser's cookie authenticates it). */
  downloadUrl(checkpoint: ICheckpoint): string {
    const parts = ['checkpoints', checkpoint.job, checkpoint.name, 'download'];
    return (
      this.serverSettings.baseUrl + 'jupyter-burst/' + parts.map(encodeURIComponent).join('/')
    );
  }

  private async _act(path: string, body: object, onError?: () => void): Promise<void> {
    try {
      await requestAPI(path, this.serverSettings, {
        method: 'POST',
        body: JSON.stringify(body)
      });
      this.error = null;
    } catch (reason) {
      onError?.();
      this.error = message(reason);
      this._changed.emit();
      throw reason;
    }
    await this.refresh();
  }

  private _get<T>(path: string): Promise<T> {
    return requestAPI<T>(path, this.serverSettings);
  }

  private _changed = new Signal<this, void>(this);
  private _timer: number | null = null;
  private _soon: number | null = null;
  private _inFlight: Promise<void> | null = null;
}

/** A failure as one line (the server's own line when it sent one). */
export function message(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}
