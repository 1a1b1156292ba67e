import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { CheckpointsSection, ClustersSection } from './components';
import { burstIcon } from './icon';
import { IJobChartsProps, ILogViewProps, JobsSection } from './jobs';
import { LogSocket } from './logsocket';
import { ICheckpoint, ILogLine, LogBuffer } from './model';
import { BurstStore } from './store';
import { UsageSection } from './usage';

export const SIDEBAR_ID = 'jupyter-burst-sidebar';

/**
 * The jupyter-burst panel in the left side bar: clusters and what they cost (ticking every
 * second while nodes run), their slots' GPU use, jobs with their charts and live logs, and
 * the checkpoints. It tells the
 * store when it is shown, so that nothing is fetched for it while it is closed.
 */
export class BurstSidebar extends ReactWidget {
  constructor(
    private readonly _store: BurstStore,
    private readonly _restore: (checkpoint: ICheckpoint) => void,
    private readonly _trans: TranslationBundle,
    private readonly _openDashboard?: (name: string, url: string) => void
  ) {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('jp-BurstSidebar');
    this.title.icon = burstIcon;
    this.title.caption = _trans.__('jupyter-burst');
    _store.changed.connect(this._onStoreChanged, this);
    // The cost figures tick between fetches.
    this._ticker = window.setInterval(() => {
      if (this.isVisible) {
        this.update();
      }
    }, 1000);
  }

  /** The provider a cell uses when it names none (from the settings). */
  set defaultProvider(name: string) {
    this._defaultProvider = name;
    this.update();
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    this._socket?.close();
    this._store.changed.disconnect(this._onStoreChanged, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._store.sidebarShown = true;
    // The selected job's lines again, from where they stopped when the sidebar closed.
    if (
      this._selected !== null &&
      this._socket === null &&
      this._logState !== 'ended'
    ) {
      this._openLog(this._selected, this._logCursor);
    }
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._store.sidebarShown = false;
    if (this._socket !== null) {
      this._logCursor = this._socket.cursor;
      this._socket.close();
      this._socket = null;
    }
  }

  /** Show the live log of `jobId` (null: none). */
  selectJob(jobId: string | null): void {
    if (jobId === this._selected) {
      return;
    }
    this._socket?.close();
    this._socket = null;
    this._selected = jobId;
    this._store.selectJob(jobId);
    this._buffer.clear();
    this._frozen = null;
    this._rank = null;
    this._logState = 'connecting';
    this._logError = null;
    this._logCursor = 0;
    if (jobId !== null && this.isVisible) {
      this._openLog(jobId, 0);
    }
    this.update();
  }

  private _openLog(jobId: string, since: number): void {
    this._socket = new LogSocket(
      jobId,
      this._store.serverSettings,
      message => {
        if (this._buffer.add(message)) {
          this._scheduleUpdate();
        }
        if (message.error) {
          this._logError = message.error;
        }
      },
      (state, error) => {
        this._logState = state;
        this._logError = error ?? null;
        this.update();
      },
      since
    );
  }

  render(): JSX.Element {
    const store = this._store;
    const trans = this._trans;
    const now = Date.now();
    return (
      <div className="jp-BurstSidebar-body">
        <header className="jp-BurstSidebar-header">
          <h2>{trans.__('jupyter-burst')}</h2>
          <span
            className="jp-BurstSidebar-provider"
            title={trans.__('Settings › jupyter-burst')}
          >
            {trans.__('default provider: %1', this._defaultProvider)}
          </span>
        </header>
        {store.error && (
          <p className="jp-BurstSidebar-error" role="alert">
            {store.error}
          </p>
        )}
        <ClustersSection
          clusters={store.clusters}
          starts={store.starts}
          cost={store.cost}
          fetchedAt={store.fetchedAt}
          now={now}
          stopping={store.stopping}
          // A refusal is a notification already (the store's); nothing more to do here.
          onStop={name => void store.stopCluster(name).catch(() => undefined)}
          onIdle={(name, minutes) =>
            void store.setIdle(name, minutes).catch(() => undefined)
          }
          onDashboard={this._openDashboard}
          trans={trans}
        />
        <UsageSection clusters={store.clusters} trans={trans} />
        <JobsSection
          jobs={store.jobs}
          selected={this._selected}
          onSelect={jobId => this.selectJob(jobId)}
          onCancel={jobId => void store.cancelJob(jobId).catch(() => undefined)}
          cancelling={store.cancelling}
          charts={this._chartsProps()}
          log={this._logProps()}
          trans={trans}
        />
        <CheckpointsSection
          checkpoints={store.checkpoints}
          downloadUrl={checkpoint => store.downloadUrl(checkpoint)}
          onRestore={this._restore}
          trans={trans}
        />
      </div>
    );
  }

  private _chartsProps(): IJobChartsProps | null {
    const metrics = this._store.metrics;
    if (this._selected === null || metrics?.job !== this._selected) {
      return null;
    }
    return {
      jobId: this._selected,
      curves: metrics.curves,
      complete: metrics.complete,
      loaded: metrics.status !== null,
      cost: this._store.costHistory.get(this._selected) ?? null
    };
  }

  private _logProps(): ILogViewProps | null {
    if (this._selected === null) {
      return null;
    }
    const following = this._frozen === null;
    const lines: readonly ILogLine[] = following
      ? this._buffer.view(this._rank, this._search)
      : this._frozen!;
    return {
      jobId: this._selected,
      lines,
      dropped: this._buffer.dropped,
      ranks: [...this._buffer.ranks].sort((a, b) => a - b),
      rank: this._rank,
      search: this._search,
      following,
      state: this._logState,
      error: this._logError,
      onRank: rank => {
        this._rank = rank;
        this._refreeze();
      },
      onSearch: text => {
        this._search = text;
        this._refreeze();
      },
      onFollow: follow => {
        this._frozen = follow
          ? null
          : this._buffer.view(this._rank, this._search);
        this.update();
      }
    };
  }

  /** A paused view keeps its lines, filtered anew when the rank or the search changes. */
  private _refreeze(): void {
    if (this._frozen !== null) {
      this._frozen = this._buffer.view(this._rank, this._search);
    }
    this.update();
  }

  /** A flood of messages renders at most once per animation frame. */
  private _scheduleUpdate(): void {
    if (this._frame === null) {
      this._frame = window.requestAnimationFrame(() => {
        this._frame = null;
        this.update();
      });
    }
  }

  private _onStoreChanged(): void {
    if (this._selected === null) {
      // Follow the newest running job by default: what the user just started.
      const running = this._store.jobs.find(job => job.status === 'running');
      if (running && running.id !== this._lastAutoSelected) {
        this._lastAutoSelected = running.id;
        this.selectJob(running.id);
        return;
      }
    }
    this.update();
  }

  private _defaultProvider = 'local';
  private _selected: string | null = null;
  private _lastAutoSelected: string | null = null;
  private _socket: LogSocket | null = null;
  /** Where the selected job's lines stopped when the sidebar closed its socket. */
  private _logCursor = 0;
  private readonly _buffer = new LogBuffer();
  private _frozen: ILogLine[] | null = null;
  private _rank: number | null = null;
  private _search = '';
  private _logState: ILogViewProps['state'] = 'connecting';
  private _logError: string | null = null;
  private _frame: number | null = null;
  private readonly _ticker: number;
}
