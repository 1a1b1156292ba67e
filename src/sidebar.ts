import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { burstIcon } from './icon';
import { requestAPI } from './request';

/**
 * What `GET <baseUrl>/jupyter-burst/status` answers.
 */
export interface IStatus {
  version: string;
}

/**
 * The jupyter-burst panel in the left side bar.
 *
 * For now it says that the extension is loaded and which version the server runs;
 * clusters, cost, jobs, live logs and checkpoints come here later.
 */
export class BurstSidebar extends Widget {
  constructor(serverSettings: ServerConnection.ISettings) {
    super();
    this.id = 'jupyter-burst-sidebar';
    this.addClass('jp-BurstSidebar');
    this.title.icon = burstIcon;
    this.title.caption = 'jupyter-burst';
    this.title.label = '';

    const header = document.createElement('h2');
    header.className = 'jp-BurstSidebar-header';
    header.textContent = 'jupyter-burst';

    const loaded = document.createElement('p');
    loaded.className = 'jp-BurstSidebar-loaded';
    loaded.textContent = 'jupyter-burst is loaded';

    this._version = document.createElement('p');
    this._version.className = 'jp-BurstSidebar-version';
    this._version.textContent = 'server version: …';

    this._provider = document.createElement('p');
    this._provider.className = 'jp-BurstSidebar-provider';

    this.node.append(header, loaded, this._version, this._provider);
    void this._fetchStatus(serverSettings);
  }

  /**
   * Show the provider a cell uses when `%%burst` names none (from the settings).
   */
  set defaultProvider(name: string) {
    this._provider.textContent = `default provider: ${name}`;
  }

  private async _fetchStatus(
    serverSettings: ServerConnection.ISettings
  ): Promise<void> {
    try {
      const status = await requestAPI<IStatus>('status', serverSettings);
      this._version.textContent = `server version: ${status.version}`;
    } catch (reason) {
      this._version.textContent = `the jupyter-burst server extension did not answer: ${reason}`;
      console.error('jupyter-burst: GET status failed', reason);
    }
  }

  private _version: HTMLParagraphElement;
  private _provider: HTMLParagraphElement;
}
