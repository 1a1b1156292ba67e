import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ILogMessage } from './model';

/** Wait before connecting again after a socket closed with the job still running (ms)... */
const RECONNECT_MS = 1000;
/** ... longer after each try that did not connect, up to this (ms). */
const RECONNECT_MAX_MS = 30_000;

/**
 * The live lines of one job: `WS <base>/jupyter-burst/jobs/<id>/logs/stream`. The server
 * sends the backfill from the ledger, then new lines within a fraction of a second; every
 * message is bounded and says how many lines it left out. A dropped connection is opened
 * again from the last cursor, so no line is shown twice or skipped without a count; a
 * new socket may start from a cursor too (the sidebar closes its socket while hidden).
 */
export class LogSocket {
  constructor(
    readonly jobId: string,
    private readonly _serverSettings: ServerConnection.ISettings,
    private readonly _onMessage: (message: ILogMessage) => void,
    private readonly _onState: (
      state: 'connecting' | 'live' | 'ended' | 'error',
      error?: string
    ) => void,
    since = 0
  ) {
    this._cursor = since;
    this._open();
  }

  /** Where the next line starts: a socket opened from here misses none and repeats none. */
  get cursor(): number {
    return this._cursor;
  }

  close(): void {
    this._closed = true;
    if (this._retry !== null) {
      window.clearTimeout(this._retry);
    }
    this._socket?.close();
  }

  private _open(): void {
    const settings = this._serverSettings;
    let url =
      URLExt.join(
        settings.wsUrl,
        'jupyter-burst',
        'jobs',
        encodeURIComponent(this.jobId)
      ) + `/logs/stream?since=${this._cursor}`;
    if (settings.token && settings.appendToken) {
      url += `&token=${encodeURIComponent(settings.token)}`;
    }
    this._onState('connecting');
    const socket = new settings.WebSocket(url);
    this._socket = socket;
    socket.onopen = () => {
      this._delay = RECONNECT_MS;
      this._onState('live');
    };
    socket.onmessage = event => {
      let message: ILogMessage;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message.next === 'number') {
        this._cursor = message.next;
      }
      if (message.end) {
        this._ended = true;
      }
      this._onMessage(message);
    };
    socket.onclose = event => {
      if (this._closed) {
        return;
      }
      if (this._ended) {
        this._onState('ended');
        return;
      }
      if (event.code === 1011) {
        this._onState(
          'error',
          event.reason || 'the log stream failed; see the server log'
        );
      } else {
        this._onState('connecting');
      }
      this._retry = window.setTimeout(() => {
        this._retry = null;
        if (!this._closed) {
          this._open();
        }
      }, this._delay);
      // A server that is down is not asked every second for long.
      this._delay = Math.min(this._delay * 2, RECONNECT_MAX_MS);
    };
  }

  private _socket: WebSocket | null = null;
  private _cursor = 0;
  private _ended = false;
  private _closed = false;
  private _retry: number | null = null;
  private _delay = RECONNECT_MS;
}
