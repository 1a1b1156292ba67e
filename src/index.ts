import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';

import { listenForCellCancel } from './cellcancel';
import {
  dashboardArgs,
  OPEN_DASHBOARD_COMMAND,
  openDashboard
} from './dashboard';
import { metricsRendererFactory } from './mimerender';
import { ICheckpoint } from './model';
import { errorMessage, notifyError, notifyWarning } from './notify';
import { watchForPrewarm } from './prewarm';
import { requestAPI } from './request';
import { BurstSidebar, SIDEBAR_ID } from './sidebar';
import { CostStatus } from './statusbar';
import { BurstStore } from './store';

const PLUGIN_ID = 'jupyter-burst:plugin';
const OPEN_COMMAND = 'jupyter-burst:open-sidebar';

/** The settings the kernels read (through the server extension): name in the schema → key. */
const KERNEL_SETTINGS = ['defaultProvider', 'idle', 'budget'] as const;

/**
 * The jupyter-burst sidebar in the left area, its status-bar cost, the cancel buttons of
 * `%%burst` cells, pre-warm of a `%%burst` cell's cluster while it is written, and its settings.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'The jupyter-burst sidebar: clusters, live cost, jobs and their logs, checkpoints.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ISettingRegistry,
    INotebookTracker,
    IStatusBar,
    ICommandPalette,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    notebooks: INotebookTracker | null,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_burst');
    const store = new BurstStore(app.serviceManager.serverSettings);
    const restore = (checkpoint: ICheckpoint) =>
      insertRestoreCell(app, notebooks, checkpoint, trans);
    const showDashboard = (name: string, url: string) =>
      void app.commands
        .execute(OPEN_DASHBOARD_COMMAND, { name, url })
        .catch(reason => notifyError(errorMessage(reason)));
    const sidebar = new BurstSidebar(store, restore, trans, showDashboard);
    app.shell.add(sidebar, 'left', { rank: 900 });
    restorer?.add(sidebar, sidebar.id);
    store.start();
    listenForCellCancel(store);
    if (notebooks) {
      watchForPrewarm(notebooks, store); // the server starts nothing while burst.prewarm is off
    }

    app.commands.addCommand(OPEN_COMMAND, {
      label: trans.__('Show the jupyter-burst sidebar'),
      describedBy: { args: null },
      execute: () => app.shell.activateById(SIDEBAR_ID)
    });
    palette?.addItem({
      command: OPEN_COMMAND,
      category: trans.__('jupyter-burst')
    });

    app.commands.addCommand(OPEN_DASHBOARD_COMMAND, {
      label: args =>
        typeof args.name === 'string'
          ? trans.__('Open the Dask dashboard of cluster %1', args.name)
          : trans.__('Open the Dask dashboard of a cluster'),
      describedBy: {
        args: {
          type: 'object',
          properties: {
            name: { type: 'string', description: trans.__('The cluster') },
            url: {
              type: 'string',
              description: trans.__(
                "Its dashboard's path on this server (its dashboard_url)"
              )
            }
          },
          required: ['name', 'url']
        }
      },
      isEnabled: args => dashboardArgs(args) !== null,
      execute: args => {
        const dashboard = dashboardArgs(args);
        if (!dashboard) {
          throw new Error(
            trans.__(
              'jupyter-burst: no dashboard to open: give a cluster name and a path on this server'
            )
          );
        }
        return openDashboard(app.shell, dashboard, trans);
      }
    });

    if (statusBar) {
      const item = new CostStatus(
        store,
        () => app.shell.activateById(SIDEBAR_ID),
        trans
      );
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 900,
        isActive: () => item.running,
        activeStateChanged: store.changed
      });
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const update = () => {
            sidebar.defaultProvider = settings.get('defaultProvider')
              .composite as string;
            void sendKernelSettings(store, settings, trans);
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => {
          notifyError(
            trans.__(
              'jupyter-burst: its settings did not load: %1',
              errorMessage(reason)
            )
          );
        });
    }
  }
};

/**
 * What the user set in the Settings Editor goes to the server extension, which writes it
 * where the kernels' `%%burst` reads its defaults. Only values the user set to something
 * other than the schema's default are sent, so the defaults never override a Dask config
 * file of the user's own.
 */
async function sendKernelSettings(
  store: BurstStore,
  settings: ISettingRegistry.ISettings,
  trans: TranslationBundle
): Promise<void> {
  const body: Record<string, unknown> = {};
  for (const key of KERNEL_SETTINGS) {
    const value = settings.user[key];
    // The form editor saves every field it shows: a value equal to the schema's default
    // is not a choice of the user's.
    if (
      value !== undefined &&
      JSON.stringify(value) !== JSON.stringify(settings.default(key))
    ) {
      body[key] = value;
    }
  }
  try {
    await requestAPI('settings', store.serverSettings, {
      method: 'PUT',
      body: JSON.stringify(body)
    });
  } catch (reason) {
    notifyError(
      trans.__(
        'jupyter-burst: the settings did not reach the kernels: %1',
        errorMessage(reason)
      )
    );
  }
}

/** `%burst restore JOB step=K as state` in a new cell below the active one. */
function insertRestoreCell(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker | null,
  checkpoint: ICheckpoint,
  trans: TranslationBundle
): void {
  const panel = notebooks?.currentWidget;
  if (!panel) {
    notifyWarning(
      trans.__(
        'Open a notebook first; then Restore inserts: %1 as state',
        checkpoint.restore
      )
    );
    return;
  }
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  notebook.activeCell?.model.sharedModel.setSource(
    `${checkpoint.restore} as state`
  );
  app.shell.activateById(panel.id);
  notebook.activate();
}

/**
 * The chart under a `%%burst` cell of what its ranks `burst.log`: JupyterLab draws the
 * kernel's `application/vnd.jupyter-burst.metrics+json` display with it, not the PNG.
 */
const metricsRenderer: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-burst:metrics-renderer',
  description:
    'Draws the charts of burst.log metrics under a %%burst cell, a curve per rank.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [ITranslator],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_burst');
    const factory = metricsRendererFactory(trans);
    rendermime.addFactory(factory, factory.defaultRank);
  }
};

export default [plugin, metricsRenderer];
