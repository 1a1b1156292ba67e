import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { tickingUsd } from './components';
import { BurstStore } from './store';

/**
 * The status-bar item: what running clusters cost so far, ticking every second; a click
 * opens the sidebar. Hidden while nothing runs.
 */
export class CostStatus extends ReactWidget {
  constructor(
    private readonly _store: BurstStore,
    private readonly _open: () => void
  ) {
    super();
    this.addClass('jp-BurstStatus');
    _store.changed.connect(() => this.update());
    this._ticker = window.setInterval(() => this.update(), 1000);
  }

  /** Whether there is anything to show (the status bar hides the item otherwise). */
  get running(): boolean {
    return this._store.clusters.some(c => c.state === 'running');
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    super.dispose();
  }

  render(): JSX.Element | null {
    const cost = this._store.cost;
    if (!cost || !this.running) {
      return null;
    }
    const figure = tickingUsd(
      cost.running.so_far.exact,
      cost.running.per_hour.exact,
      this._store.fetchedAt,
      Date.now()
    );
    return (
      <button
        type="button"
        className="jp-BurstStatus-button"
        onClick={this._open}
        title="jupyter-burst: what the running clusters cost so far; click for the sidebar"
      >
        burst {figure} · {cost.running.per_hour.usd}/h
      </button>
    );
  }

  private readonly _ticker: number;
}
