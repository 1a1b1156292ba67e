import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { IFrame } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { burstIcon } from './icon';

/**
 * A cluster's Dask dashboard in a main-area tab of its own: the page the server extension
 * proxies behind Jupyter's login (`jupyter-burst/dashboard/<cluster>/status`), in an iframe.
 */

export const OPEN_DASHBOARD_COMMAND = 'jupyter-burst:open-dashboard';

/** What the command is given: the cluster's name, and its row's `dashboard_url`. */
export interface IDashboardArgs {
  name: string;
  url: string;
}

/**
 * The iframe's exceptions to its sandbox: bokeh's scripts, its websocket and requests with
 * Jupyter's login (same origin), the dashboard's links to its other pages and its forms.
 */
export const DASHBOARD_SANDBOX: IFrame.SandboxExceptions[] = [
  'allow-scripts',
  'allow-same-origin',
  'allow-popups',
  'allow-forms'
];

/** The tab of a cluster's dashboard: one per cluster, found again by this id. */
export function dashboardTabId(name: string): string {
  return `jupyter-burst-dashboard-${name}`;
}

export function dashboardLabel(name: string, trans: TranslationBundle): string {
  return trans.__('Dask · %1', name);
}

/**
 * The command's arguments, or null when they are not a cluster's name and a path on this
 * server: the iframe may run scripts with Jupyter's login, so it loads nothing of another
 * origin (an absolute URL, `//host`, or `/\host` as browsers read it).
 */
export function dashboardArgs(
  args: Readonly<Record<string, unknown>>
): IDashboardArgs | null {
  const { name, url } = args;
  if (typeof name !== 'string' || name === '' || typeof url !== 'string') {
    return null;
  }
  const here = 'http://this.server.invalid';
  let target: URL;
  try {
    target = new URL(url, here);
  } catch {
    return null;
  }
  if (!url.startsWith('/') || target.origin !== here) {
    return null;
  }
  return { name, url };
}

/**
 * Show the dashboard of `args.name`: its tab when it is open already, a new one otherwise.
 */
export function openDashboard(
  shell: JupyterFrontEnd.IShell,
  args: IDashboardArgs,
  trans: TranslationBundle
): Widget {
  const id = dashboardTabId(args.name);
  let widget: Widget | undefined;
  for (const open of shell.widgets('main')) {
    if (open.id === id) {
      widget = open;
      break;
    }
  }
  if (!widget) {
    const content = new IFrame({ sandbox: DASHBOARD_SANDBOX });
    content.url = args.url;
    widget = new MainAreaWidget({ content });
    widget.id = id;
    widget.addClass('jp-BurstDashboard');
    widget.title.label = dashboardLabel(args.name, trans);
    widget.title.caption = trans.__(
      'The Dask dashboard of cluster %1',
      args.name
    );
    widget.title.icon = burstIcon;
    widget.title.closable = true;
    shell.add(widget, 'main');
  }
  shell.activateById(id);
  return widget;
}
