import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { BurstSidebar } from './sidebar';

const PLUGIN_ID = 'jupyter-burst:plugin';

/**
 * The jupyter-burst sidebar in the left area, with its settings.
 */
const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The jupyter-burst sidebar: clusters, cost, jobs, logs and checkpoints.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    const sidebar = new BurstSidebar(app.serviceManager.serverSettings);
    app.shell.add(sidebar, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const update = () => {
            sidebar.defaultProvider = settings.get('defaultProvider')
              .composite as string;
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => {
          console.error('jupyter-burst: failed to load settings', reason);
        });
    }
  }
};

export default [sidebarPlugin];
