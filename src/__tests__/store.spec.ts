import { ServerConnection } from '@jupyterlab/services';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import {
  COST_REFRESH_MS,
  MAX_BACKOFF_MS,
  METRICS_REFRESH_MS,
  SIDEBAR_REFRESH_MS
} from '../polling';
import { requestAPI } from '../request';
import { idleAnswer } from './answers';
import { BurstStore } from '../store';

vi.mock('../request', () => ({ requestAPI: vi.fn() }));

const asked = vi.mocked(requestAPI);

/** The endpoints asked so far, without their query ("jobs?limit=200" → "jobs"). */
function endpoints(): string[] {
  return asked.mock.calls.map(([path]) => path.split('?')[0]);
}

let store: BurstStore;
let notify: ReturnType<typeof vi.fn>;

beforeEach(() => {
  vi.useFakeTimers();
  asked.mockReset();
  asked.mockImplementation(idleAnswer);
  notify = vi.fn();
  store = new BurstStore(ServerConnection.makeSettings(), notify);
});

afterEach(() => {
  store.dispose();
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('polling the server extension', () => {
  it('asks only for the cost, slowly, while the sidebar is closed', async () => {
    store.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(endpoints()).toEqual(['cost']);
    await vi.advanceTimersByTimeAsync(COST_REFRESH_MS * 3);
    expect(endpoints()).toEqual(['cost', 'cost', 'cost', 'cost']);
  });

  it('fetches the sidebar views at once when it opens, then every few seconds', async () => {
    store.start();
    await vi.advanceTimersByTimeAsync(SIDEBAR_REFRESH_MS * 5);
    asked.mockClear();
    store.sidebarShown = true;
    await vi.advanceTimersByTimeAsync(0);
    expect(new Set(endpoints())).toEqual(
      new Set(['clusters', 'cost', 'jobs', 'checkpoints', 'starts'])
    );
    await vi.advanceTimersByTimeAsync(SIDEBAR_REFRESH_MS);
    expect(endpoints().filter(e => e === 'jobs')).toHaveLength(2);

    // Closed again: its views stand by; the cost alone goes on, slowly.
    store.sidebarShown = false;
    asked.mockClear();
    await vi.advanceTimersByTimeAsync(COST_REFRESH_MS + SIDEBAR_REFRESH_MS);
    expect(endpoints().every(e => e === 'cost')).toBe(true);
    expect(endpoints().length).toBeLessThanOrEqual(1);
  });

  it('stands by while the browser tab is hidden, sidebar open or not', async () => {
    const visibility = vi
      .spyOn(document, 'visibilityState', 'get')
      .mockReturnValue('hidden');
    document.dispatchEvent(new Event('visibilitychange'));
    try {
      store.sidebarShown = true;
      store.start();
      // Poll lingers one tick before it stands by.
      await vi.advanceTimersByTimeAsync(SIDEBAR_REFRESH_MS * 2);
      asked.mockClear();
      await vi.advanceTimersByTimeAsync(COST_REFRESH_MS * 2);
      expect(endpoints()).toEqual([]);
    } finally {
      visibility.mockRestore();
      document.dispatchEvent(new Event('visibilitychange'));
    }
  });

  it('backs off while the server fails, tells the user once, and recovers', async () => {
    // Poll draws each wait at random between its interval and three times the last one:
    // the middle of that range, so that the count of tries below does not vary by chance.
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    asked.mockRejectedValue(new Error('Service Unavailable'));
    store.sidebarShown = true;
    store.start();
    await vi.advanceTimersByTimeAsync(MAX_BACKOFF_MS * 3);
    const tries = endpoints().filter(e => e === 'jobs').length;
    // Every 3 s for 3 min would be 60 tries; backing off to a minute makes it a handful.
    expect(tries).toBeGreaterThan(1);
    expect(tries).toBeLessThan(12);
    expect(notify).toHaveBeenCalledTimes(1);
    expect(notify.mock.calls[0][0]).toBe(
      'jupyter-burst server extension: Service Unavailable'
    );
    expect(store.error).toContain('Service Unavailable');

    asked.mockImplementation(idleAnswer);
    await vi.advanceTimersByTimeAsync(MAX_BACKOFF_MS);
    expect(store.error).toBeNull();
  });

  it('tells the user the server line when an action is refused', async () => {
    asked.mockRejectedValueOnce(new Error("no running cluster 'nope'"));
    await expect(store.stopCluster('nope')).rejects.toThrow('nope');
    expect(notify).toHaveBeenCalledWith("no running cluster 'nope'");
    expect(store.stopping.has('nope')).toBe(false);
  });
});

describe("the selected job's metrics and cost", () => {
  /** A job whose points arrive over time: `pages` answered in turn, then nothing new. */
  function serveMetrics(
    pages: { status: string; points: number[][]; more?: boolean }[]
  ) {
    let served = 0;
    const sinces: number[] = [];
    asked.mockImplementation(async (path: string) => {
      if (!path.startsWith('jobs/j1/metrics')) {
        return idleAnswer(path);
      }
      sinces.push(Number(new URL(path, 'http://x/').searchParams.get('since')));
      const page = pages[Math.min(served, pages.length - 1)];
      const fresh = served < pages.length;
      served += 1;
      return {
        job: 'j1',
        status: page.status,
        points: fresh
          ? page.points.map(([rank, step, value]) => ({
              ts: 0,
              rank,
              step,
              name: 'loss',
              value
            }))
          : [],
        next: Math.min(served, pages.length) * 10,
        more: fresh && (page.more ?? false)
      };
    });
    return sinces;
  }

  it('asks from its cursor while the job runs and the sidebar is shown, then stops', async () => {
    const sinces = serveMetrics([
      {
        status: 'running',
        points: [
          [0, 0, 1],
          [1, 0, 1.1]
        ]
      },
      { status: 'running', points: [[0, 1, 0.5]], more: true },
      { status: 'running', points: [[1, 1, 0.6]] },
      {
        status: 'done',
        points: [
          [0, 2, 0.2],
          [1, 2, 0.3]
        ]
      }
    ]);
    store.start();
    store.sidebarShown = true;
    store.selectJob('j1');
    await vi.advanceTimersByTimeAsync(0);
    expect(store.metrics?.curves.loss['0']).toEqual([[0, 1]]);
    expect(store.metrics?.complete).toBe(false);
    await vi.advanceTimersByTimeAsync(METRICS_REFRESH_MS);
    // A full page is followed at once by the next.
    expect(store.metrics?.curves.loss['1']).toEqual([
      [0, 1.1],
      [1, 0.6]
    ]);
    await vi.advanceTimersByTimeAsync(METRICS_REFRESH_MS);
    expect(store.metrics?.complete).toBe(true);
    expect(store.metrics?.curves.loss['0']).toHaveLength(3);
    expect(sinces).toEqual([0, 10, 20, 30]);
    // Ended and all in: asked no more.
    await vi.advanceTimersByTimeAsync(METRICS_REFRESH_MS * 5);
    expect(sinces).toHaveLength(4);
  });

  it('asks nothing while the sidebar is closed, and starts afresh for another job', async () => {
    const sinces = serveMetrics([{ status: 'running', points: [[0, 0, 1]] }]);
    store.start();
    store.selectJob('j1');
    await vi.advanceTimersByTimeAsync(METRICS_REFRESH_MS * 3);
    expect(sinces).toEqual([]);
    store.sidebarShown = true;
    await vi.advanceTimersByTimeAsync(0);
    expect(sinces).toEqual([0]);
    store.selectJob(null);
    expect(store.metrics).toBeNull();
    await vi.advanceTimersByTimeAsync(METRICS_REFRESH_MS * 3);
    expect(sinces).toEqual([0]);
  });

  it('tells a failure to fetch the metrics once, and backs off', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    asked.mockImplementation(async (path: string) => {
      if (path.startsWith('jobs/j1/metrics')) {
        throw new Error('Internal Server Error');
      }
      return idleAnswer(path);
    });
    store.start();
    store.sidebarShown = true;
    store.selectJob('j1');
    await vi.advanceTimersByTimeAsync(MAX_BACKOFF_MS * 3);
    const tries = asked.mock.calls.filter(([p]) => p.includes('/metrics'));
    expect(tries.length).toBeGreaterThan(1);
    expect(tries.length).toBeLessThan(12); // every 2 s for 3 min would be 90
    expect(notify).toHaveBeenCalledTimes(1);
    expect(notify.mock.calls[0][0]).toBe(
      'jupyter-burst: the metrics of job j1: Internal Server Error'
    );
    expect(store.error).toBeNull(); // the sidebar's views still come
  });

  it("keeps a running job's cost over time from the jobs poll", async () => {
    let seconds = 1;
    asked.mockImplementation(async (path: string) => {
      if (!path.startsWith('jobs?')) {
        return idleAnswer(path);
      }
      const exact = (seconds / 100).toFixed(4);
      const cost = {
        usd: '$0.01',
        exact,
        notional: { usd: '$0.01', exact },
        shown: '$0.01'
      };
      const job = {
        id: 'j1',
        status: 'running',
        duration_seconds: seconds,
        cost
      };
      seconds += 3;
      return [job];
    });
    store.start();
    store.sidebarShown = true;
    await vi.advanceTimersByTimeAsync(SIDEBAR_REFRESH_MS * 2);
    expect(store.costHistory.get('j1')).toEqual([
      [1, 0.01],
      [4, 0.04],
      [7, 0.07]
    ]);
  });
});
