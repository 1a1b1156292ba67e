import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';
import { describe, expect, it } from 'vitest';

import {
  dashboardArgs,
  dashboardLabel,
  dashboardTabId,
  openDashboard
} from '../dashboard';

const trans = nullTranslator.load('jupyter_burst');
const URL_OF_LAB = '/jupyter-burst/dashboard/lab/status';

/** The main area of a shell: what was added to it, and which tab is active. */
function fakeShell() {
  const main: Widget[] = [];
  const shell = {
    active: null as string | null,
    main,
    add: (widget: Widget) => main.push(widget),
    widgets: () => main[Symbol.iterator](),
    activateById(id: string) {
      shell.active = id;
    }
  };
  return shell;
}

describe("a cluster's dashboard tab", () => {
  it('has an id and a label of its cluster', () => {
    expect(dashboardTabId('lab')).toBe('jupyter-burst-dashboard-lab');
    expect(dashboardLabel('lab', trans)).toBe('Dask · lab');
  });

  it('takes a name and a path on this server, nothing else', () => {
    expect(dashboardArgs({ name: 'lab', url: URL_OF_LAB })).toEqual({
      name: 'lab',
      url: URL_OF_LAB
    });
    expect(
      dashboardArgs({ name: 'lab', url: '/base/jupyter-burst/dashboard/lab/' })
    ).not.toBeNull();
    for (const url of [
      'https://elsewhere.example/status',
      '//elsewhere.example/status',
      '/\\elsewhere.example/status',
      'javascript:alert(1)',
      'status'
    ]) {
      expect(dashboardArgs({ name: 'lab', url })).toBeNull();
    }
    expect(dashboardArgs({ url: URL_OF_LAB })).toBeNull();
    expect(dashboardArgs({ name: '', url: URL_OF_LAB })).toBeNull();
    expect(dashboardArgs({ name: 'lab' })).toBeNull();
  });

  it('opens in the main area, sandboxed, and once: a second time shows the same tab', () => {
    const shell = fakeShell();
    const asShell = shell as unknown as JupyterFrontEnd.IShell;
    const tab = openDashboard(asShell, { name: 'lab', url: URL_OF_LAB }, trans);
    expect(tab).toBeInstanceOf(MainAreaWidget);
    expect(shell.main).toEqual([tab]);
    expect(tab.id).toBe('jupyter-burst-dashboard-lab');
    expect(tab.title.label).toBe('Dask · lab');
    expect(shell.active).toBe(tab.id);
    const iframe = tab.node.querySelector('iframe')!;
    expect(iframe.getAttribute('src')).toBe(URL_OF_LAB);
    expect(iframe.getAttribute('sandbox')).toBe(
      'allow-scripts allow-same-origin allow-popups allow-forms'
    );

    shell.active = null;
    const again = openDashboard(
      asShell,
      { name: 'lab', url: URL_OF_LAB },
      trans
    );
    expect(again).toBe(tab);
    expect(shell.main).toHaveLength(1);
    expect(shell.active).toBe(tab.id);

    const other = openDashboard(
      asShell,
      { name: 'exp', url: '/jupyter-burst/dashboard/exp/status' },
      trans
    );
    expect(shell.main).toEqual([tab, other]);
    tab.dispose();
    other.dispose();
  });
});
