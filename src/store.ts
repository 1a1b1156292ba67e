import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  addCostSample,
  addPoints,
  CostSample,
  Curves,
  IMetricsPage
} from './metrics';
import { ICheckpoint, ICluster, ICost, IJob, IStart, toMicros } from './model';
import { errorMessage, notifyError } from './notify';
import {
  COST_REFRESH_MS,
  METRICS_REFRESH_MS,
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
 *
 * A third poll brings the selected job's `burst.log` points from a cursor, while the
 * sidebar is shown and until the job has ended and every point is fetched; the jobs poll
 * also keeps each running job's cost over time, for its chart.
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
    this._metricsPoll = standbyPoll(
      'jupyter-burst:metrics',
      () => this._fetchMetrics(),
      METRICS_REFRESH_MS,
      () =>
        this._sidebarShown && this.metrics !== null && !this.metrics.complete
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
  /** The selected job's metrics (null: no job selected). */
  metrics: IJobMetrics | null = null;
  /**
   * Each job's cost over time, by its id: what the jobs poll saw while it ran (seconds since
   * its start, dollars), collected here while the sidebar is shown.
   */
  readonly costHistory = new Map<string, CostSample[]>();
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
      void this._metricsPoll.refresh();
    }
  }

  /**
   * Follow the metrics of `jobId` (null: none): all its points so far at once, then the new
   * ones while it runs. A finished job's are fetched once, complete.
   */
  selectJob(jobId: string | null): void {
    if (jobId === (this.metrics?.job ?? null)) {
      return;
    }
    this._metricsCursor = 0;
    this._metricsFailed = false;
    this.metrics =
      jobId === null
        ? null
        : { job: jobId, curves: {}, status: null, complete: false };
    if (jobId !== null) {
      void this._metricsPoll.refresh();
    }
    this._changed.emit();
  }

  /** Fetch the selected job's new points now (if the sidebar is shown); resolves once done. */
  async refreshMetrics(): Promise<void> {
    await this._metricsPoll.refresh();
    await this._metricsPoll.tick;
  }

  /** The polls (sidebar views, status-bar cost), until `dispose()`. */
  start(): void {
    void this._viewsPoll.start();
    void this._costPoll.start();
    void this._metricsPoll.start();
  }

  dispose(): void {
    this._viewsPoll.dispose();
    this._costPoll.dispose();
    this._metricsPoll.dispose();
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
    this._recordCosts(jobs);
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

  /**
   * Each running job's cost now, in its history (and a job's last figure once it ended);
   * the histories of jobs no longer listed go.
   */
  private _recordCosts(jobs: IJob[]): void {
    const listed = new Set<string>();
    for (const job of jobs) {
      listed.add(job.id);
      const history = this.costHistory.get(job.id);
      if (job.status === 'running' || history !== undefined) {
        this.costHistory.set(
          job.id,
          addCostSample(history ?? [], job.duration_seconds, job.cost.exact)
        );
      }
    }
    for (const id of [...this.costHistory.keys()]) {
      if (!listed.has(id)) {
        this.costHistory.delete(id);
      }
    }
  }

  /**
   * The selected job's points after the cursor, page by page until the server has no more;
   * complete once the job has ended and its last points are in (the server reads the job's
   * status before its points, so an ended job's answer holds every point).
   */
  private async _fetchMetrics(): Promise<void> {
    const target = this.metrics;
    if (target === null || target.complete) {
      return;
    }
    let curves = target.curves;
    let status = target.status;
    let changed = false;
    let more = true;
    for (let page = 0; more && page < METRICS_PAGES_PER_FETCH; page++) {
      const path = `jobs/${encodeURIComponent(target.job)}/metrics?since=${this._metricsCursor}`;
      let answer: IMetricsPage;
      try {
        answer = await this._get<IMetricsPage>(path);
      } catch (reason) {
        // Told once per selected job; the poll backs off and tries again.
        if (this.metrics === target && !this._metricsFailed) {
          this._metricsFailed = true;
          this._notify(
            `jupyter-burst: the metrics of job ${target.job}: ${errorMessage(reason)}`
          );
        }
        throw reason;
      }
      if (this.metrics !== target) {
        return; // another job was selected meanwhile
      }
      this._metricsFailed = false;
      if (answer.points.length > 0) {
        curves = addPoints(curves, answer.points);
        changed = true;
      }
      changed = changed || answer.status !== status;
      status = answer.status;
      this._metricsCursor = answer.next;
      more = answer.more;
    }
    const complete = !more && !JOB_UNDER_WAY.has(status ?? '');
    if (changed || complete) {
      this.metrics = { ...target, curves, status, complete };
      this._changed.emit();
    }
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
  private _metricsCursor = 0;
  /** The selected job's metrics failed to come (and the user was told). */
  private _metricsFailed = false;
  private readonly _metricsPoll: Poll;
  private _sidebarShown = false;
  private readonly _viewsPoll: Poll;
  private readonly _costPoll: Poll;
}

/** The selected job's metrics as fetched so far. */
export interface IJobMetrics {
  job: string;
  /** Its curves by metric and rank (a new object each time points arrive). */
  curves: Curves;
  /** The job's status at the last answer (null before the first). */
  status: string | null;
  /** The job has ended and every point is here: nothing more is asked. */
  complete: boolean;
}

/** Job statuses after which no more points come (any other: it is over). */
const JOB_UNDER_WAY = new Set([
  'running',
  'cancelling',
  'queued',
  'starting',
  'pending'
]);

/** Pages of points asked in one go (each up to the server's 20,000). */
const METRICS_PAGES_PER_FETCH = 10;
