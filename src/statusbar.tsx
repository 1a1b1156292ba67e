import { TranslationBundle } from '@jupyterlab/translation';
import { Button, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { tickingUsd } from './components';
import { BurstStore } from './store';

/**
 * The status-bar item: what running clusters cost so far, ticking every second between
 * the server's figures (the store asks for them slowly while the sidebar is closed); a
 * click opens the sidebar. Hidden while nothing that costs runs.
 */
export class CostStatus extends ReactWidget {
  constructor(
    private readonly _store: BurstStore,
    private readonly _open: () => void,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-BurstStatus');
    _store.changed.connect(() => this.update());
    // Ticking is drawing only: no request.
    this._ticker = window.setInterval(() => this.update(), 1000);
  }

  /** Whether there is anything to show (the status bar hides the item otherwise). */
  get running(): boolean {
    return this._store.spending;
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
      <Button
        minimal
        small
        className="jp-BurstStatus-button"
        onClick={this._open}
        title={this._trans.__(
          'jupyter-burst: what the running clusters cost so far; click for the sidebar'
        )}
      >
        {this._trans.__('burst %1 · %2/h', figure, cost.running.per_hour.usd)}
      </Button>
    );
  }

  private readonly _ticker: number;
}
