import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { requestAPI } from '../request';
import { BurstSidebar } from '../sidebar';
import { BurstStore } from '../store';
import { idleAnswer } from './answers';

vi.mock('../request', () => ({ requestAPI: vi.fn() }));

afterEach(() => {
  vi.useRealTimers();
});

describe('the sidebar', () => {
  it('tells the store when it is shown and hidden, so that it fetches only then', async () => {
    vi.useFakeTimers();
    vi.mocked(requestAPI).mockImplementation(idleAnswer);
    const store = new BurstStore(ServerConnection.makeSettings(), vi.fn());
    const sidebar = new BurstSidebar(
      store,
      vi.fn(),
      nullTranslator.load('jupyter_burst')
    );
    // As in JupyterLab's left area: attached, hidden until its tab is chosen.
    sidebar.hide();
    Widget.attach(sidebar, document.body);
    store.start();
    await vi.advanceTimersByTimeAsync(10_000);
    const views = () =>
      vi
        .mocked(requestAPI)
        .mock.calls.filter(([path]) => path.startsWith('jobs')).length;
    expect(views()).toBe(0);

    sidebar.show();
    expect(store.sidebarShown).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(views()).toBe(1); // at once
    await vi.advanceTimersByTimeAsync(10); // ReactWidget renders when idle
    expect(sidebar.node.textContent).toContain('No job has run yet.');

    sidebar.hide();
    expect(store.sidebarShown).toBe(false);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(views()).toBe(1);

    sidebar.dispose();
    store.dispose();
  });

  it('closes the live log while hidden, and goes on from where it stopped', async () => {
    vi.mocked(requestAPI).mockImplementation(idleAnswer);
    const sockets: {
      url: string;
      closed: boolean;
      feed: (data: object) => void;
    }[] = [];
    class FakeSocket {
      constructor(readonly url: string) {
        sockets.push({
          url,
          closed: false,
          feed: data => this.onmessage?.({ data: JSON.stringify(data) })
        });
      }
      onmessage: ((event: { data: string }) => void) | null = null;
      close() {
        sockets.find(s => s.url === this.url)!.closed = true;
      }
    }
    const settings = ServerConnection.makeSettings({
      WebSocket: FakeSocket as unknown as typeof WebSocket
    });
    const store = new BurstStore(settings, vi.fn());
    const sidebar = new BurstSidebar(
      store,
      vi.fn(),
      nullTranslator.load('jupyter_burst')
    );
    Widget.attach(sidebar, document.body);
    sidebar.selectJob('job1');
    expect(sockets.map(s => s.url)).toEqual([
      expect.stringContaining('/jobs/job1/logs/stream?since=0')
    ]);
    sockets[0].feed({
      lines: [{ ts: 1, rank: 0, stream: 'stdout', text: 'a' }],
      next: 5
    });

    sidebar.hide();
    expect(sockets[0].closed).toBe(true);
    sidebar.show();
    expect(sockets).toHaveLength(2);
    expect(sockets[1].url).toContain('since=5');

    sidebar.dispose();
    store.dispose();
  });
});
