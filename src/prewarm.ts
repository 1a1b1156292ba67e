import { INotebookTracker } from '@jupyterlab/notebook';

import { errorMessage, notifyError } from './notify';
import { requestAPI } from './request';
import { BurstStore } from './store';

/** How long the typing in a `%%burst` cell pauses before its cluster is asked for (ms). */
export const PREWARM_DEBOUNCE_MS = 1000;

/**
 * What follows `%%burst` on a cell's first line, once the cell has a line after it (its
 * options are then written, not half-typed); null for any other cell.
 */
export function burstLine(source: string): string | null {
  const newline = source.indexOf('\n');
  if (newline < 0) {
    return null;
  }
  const first = source.slice(0, newline).replace(/\r$/, '');
  const match = /^%%burst(?:[ \t]+(.*))?$/.exec(first);
  return match ? (match[1] ?? '').trim() : null;
}

/**
 * Pre-warm (`burst.prewarm`): a code cell that begins with `%%burst` and is being written
 * asks the server extension to start its cluster, so that the cell finds it up. The
 * server decides: it starts nothing while pre-warm is off, nor for a line that does not
 * parse, nor a cluster that runs or is starting. Each cell asks once per first line, after
 * the typing has paused.
 */
export class Prewarmer {
  constructor(
    private readonly _ask: (line: string) => Promise<unknown>,
    private readonly _delay: number = PREWARM_DEBOUNCE_MS,
    private readonly _onError: (message: string) => void = notifyError
  ) {}

  /** The source of cell `cellId` changed to `source`. */
  edited(cellId: string, source: string): void {
    const waiting = this._timers.get(cellId);
    if (waiting !== undefined) {
      window.clearTimeout(waiting);
    }
    this._timers.set(
      cellId,
      window.setTimeout(() => {
        this._timers.delete(cellId);
        this._check(cellId, source);
      }, this._delay)
    );
  }

  dispose(): void {
    for (const timer of this._timers.values()) {
      window.clearTimeout(timer);
    }
    this._timers.clear();
  }

  private _check(cellId: string, source: string): void {
    const line = burstLine(source);
    if (line === null || this._asked.get(cellId) === line) {
      return;
    }
    this._asked.set(cellId, line);
    this._ask(line).catch(reason => {
      this._onError(
        `jupyter-burst: pre-warm of '%%burst ${line}' was not asked: ${errorMessage(reason)}`
      );
    });
  }

  private readonly _timers = new Map<string, number>();
  private readonly _asked = new Map<string, string>();
}

/** Follow the source of the cell being edited in each notebook; returns the Prewarmer. */
export function watchForPrewarm(
  tracker: INotebookTracker,
  store: BurstStore
): Prewarmer {
  const prewarmer = new Prewarmer(async line => {
    const answer = await requestAPI<{ state: string }>(
      'prewarm',
      store.serverSettings,
      {
        method: 'POST',
        body: JSON.stringify({ line })
      }
    );
    if (answer.state === 'starting') {
      void store.refresh(); // the sidebar shows the start from its first phase
    }
    return answer;
  });
  tracker.widgetAdded.connect((_, panel) => {
    // Each notebook's own active cell: the one being typed in, focused or not.
    const notebook = panel.content;
    let stop: (() => void) | null = null;
    const follow = () => {
      stop?.();
      stop = null;
      const model = notebook.activeCell?.model;
      if (!model || model.type !== 'code') {
        return;
      }
      const onChange = (_: unknown, change: { sourceChange?: unknown }) => {
        if (change.sourceChange) {
          prewarmer.edited(model.id, model.sharedModel.getSource());
        }
      };
      model.sharedModel.changed.connect(onChange);
      stop = () => model.sharedModel.changed.disconnect(onChange);
    };
    notebook.activeCellChanged.connect(follow);
    follow();
    panel.disposed.connect(() => {
      stop?.();
      notebook.activeCellChanged.disconnect(follow);
    });
  });
  return prewarmer;
}
