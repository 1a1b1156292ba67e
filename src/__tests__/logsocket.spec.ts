import { ServerConnection } from '@jupyterlab/services';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { LogSocket } from '../logsocket';

/** A WebSocket that records its URL and lets the test open, feed and drop it. */
class FakeSocket {
  static made: FakeSocket[] = [];
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  close(): void {
    this.closed = true;
  }
  closed = false;
}

function socket(since?: number): LogSocket {
  const settings = ServerConnection.makeSettings({
    WebSocket: FakeSocket as unknown as typeof WebSocket
  });
  return new LogSocket('job1', settings, vi.fn(), vi.fn(), since);
}

afterEach(() => {
  FakeSocket.made = [];
  vi.useRealTimers();
});

describe('the live log socket', () => {
  it('starts from a cursor, and keeps where the lines stopped', () => {
    const log = socket(42);
    expect(FakeSocket.made[0].url).toContain('/jobs/job1/logs/stream?since=42');
    FakeSocket.made[0].onmessage!({
      data: JSON.stringify({ lines: [], next: 57 })
    });
    expect(log.cursor).toBe(57);
    log.close();
    expect(FakeSocket.made[0].closed).toBe(true);
  });

  it('connects again from its cursor, waiting longer after each failed try', () => {
    vi.useFakeTimers();
    const log = socket();
    const drop = () =>
      FakeSocket.made[FakeSocket.made.length - 1].onclose!({
        code: 1006,
        reason: ''
      });
    FakeSocket.made[0].onmessage!({ data: JSON.stringify({ next: 9 }) });
    const waits: number[] = [];
    for (let i = 0; i < 7; i++) {
      const before = FakeSocket.made.length;
      drop();
      let waited = 0;
      while (FakeSocket.made.length === before) {
        vi.advanceTimersByTime(500);
        waited += 500;
      }
      waits.push(waited);
    }
    expect(waits).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(FakeSocket.made[FakeSocket.made.length - 1].url).toContain(
      'since=9'
    );

    // Connected again: the next drop is retried after a second.
    FakeSocket.made[FakeSocket.made.length - 1].onopen!();
    drop();
    vi.advanceTimersByTime(1000);
    expect(FakeSocket.made).toHaveLength(9);
    log.close();
  });
});
