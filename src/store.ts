import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ICheckpoint, ICluster, ICost, IJob, IStart, toMicros } from './model';
import { errorMessage, notifyError } from './notify';
import {
  COST_REFRESH_MS,
  setPollInterval,
  SIDEBAR_REFRESH_MS,
  standbyPoll,
  STARTING_REFRESH_MS
} from './polling';
import { requestAPI } from './request';

/**
 * The sidebar's data: the server extension's views and its actions. The sidebar, the
 * status-bar item and the in-cell cancel buttons share one.
 *
 * Two polls keep it fresh. The sidebar's views are asked only while the sidebar is shown
 * (at once when it opens, then every few seconds); while it is closed, only the cost is
 * asked, slowly, for the status bar, which ticks by itself in between. A failure is told
 * once as a notification, and the polls back off until the server answers again.
 */
export class BurstStore {
  constructor(
    readonly serverSettings: ServerConnection.ISettings,
    private readonly _notify: (message: string) => void = notifyError
  ) {
    this._viewsPoll = standbyPoll(
      'jupyter-burst:sidebar',
      () => this._fetchViews(),
      SIDEBAR_REFRESH_MS,
      () => this._sidebarShown
    );
    // While the sidebar is shown its poll brings the cost too.
    this._costPoll = standbyPoll(
      'jupyter-burst:cost',
      () => this._fetchCost(),
      COST_REFRESH_MS,
      () => !this._sidebarShown
    );
  }

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

  /** Whether anything that costs money runs now (the cost's rate is not zero). */
  get spending(): boolean {
    return (
      this.cost !== null && toMicros(this.cost.running.per_hour.exact) > 0n
    );
  }

  /** Whether the sidebar is shown: its views are fetched at once, then kept fresh. */
  get sidebarShown(): boolean {
    return this._sidebarShown;
  }
  set sidebarShown(shown: boolean) {
    if (shown === this._sidebarShown) {
      return;
    }
    this._sidebarShown = shown;
    if (shown) {
      void this._viewsPoll.refresh();
    }
  }

  /** The polls (sidebar views, status-bar cost), until `dispose()`. */
  start(): void {
    void this._viewsPoll.start();
    void this._costPoll.start();
  }

  dispose(): void {
    this._viewsPoll.dispose();
    this._costPoll.dispose();
  }

  /** Fetch the sidebar's views now, if the sidebar is shown; resolves once done. */
  async refresh(): Promise<void> {
    await this._viewsPoll.refresh();
    await this._viewsPoll.tick;
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
      this.serverSettings.baseUrl +
      'jupyter-burst/' +
      parts.map(encodeURIComponent).join('/')
    );
  }

  private async _fetchViews(): Promise<void> {
    const [clusters, cost, jobs, checkpoints, starts] = await this._reaching(
      () =>
        Promise.all([
          this._get<ICluster[]>('clusters'),
          this._get<ICost>('cost'),
          this._get<IJob[]>('jobs?limit=200'),
          this._get<ICheckpoint[]>('checkpoints'),
          this._get<IStart[]>('starts?limit=50')
        ])
    );
    Object.assign(this, { clusters, cost, jobs, checkpoints, starts });
    this.fetchedAt = Date.now();
    const starting = starts.some(s => s.state === 'starting');
    setPollInterval(
      this._viewsPoll,
      starting ? STARTING_REFRESH_MS : SIDEBAR_REFRESH_MS
    );
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
    this._changed.emit();
  }

  private async _fetchCost(): Promise<void> {
    this.cost = await this._reaching(() => this._get<ICost>('cost'));
    this.fetchedAt = Date.now();
    this._changed.emit();
  }

  /**
   * `fetch()`, recording whether the server answered: the first failure of a run is
   * notified (the polls retry with back-off, and a notification each time would bury the
   * page); the sidebar shows the failure until the server answers again.
   */
  private async _reaching<T>(fetch: () => Promise<T>): Promise<T> {
    try {
      const answer = await fetch();
      this.error = null;
      return answer;
    } catch (reason) {
      const error = `jupyter-burst server extension: ${errorMessage(reason)}`;
      if (this.error === null) {
        this._notify(error);
      }
      this.error = error;
      this._changed.emit();
      throw reason; // the poll backs off
    }
  }

  private async _act(
    path: string,
    body: object,
    onError?: () => void
  ): Promise<void> {
    try {
      await requestAPI(path, this.serverSettings, {
        method: 'POST',
        body: JSON.stringify(body)
      });
    } catch (reason) {
      onError?.();
      this._notify(errorMessage(reason));
      this._changed.emit();
      throw reason;
    }
    await this.refresh();
  }

  private _get<T>(path: string): Promise<T> {
    return requestAPI<T>(path, this.serverSettings);
  }

  private _changed = new Signal<this, void>(this);
  private _sidebarShown = false;
  private readonly _viewsPoll: Poll;
  private readonly _costPoll: Poll;
}
