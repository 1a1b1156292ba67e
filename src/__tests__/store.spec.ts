import { ServerConnection } from '@jupyterlab/services';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import {
  COST_REFRESH_MS,
  MAX_BACKOFF_MS,
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
