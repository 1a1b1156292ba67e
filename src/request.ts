import { URLExt } from '@jupyterlab/coreutils';

import { ServerConnection } from '@jupyterlab/services';

/**
 * Call the jupyter-burst server extension: the only way the frontend talks to the server.
 *
 * @param endPoint path under `<baseUrl>/jupyter-burst/`
 * @param serverSettings the server settings to use (the app's `serviceManager.serverSettings`)
 * @param init initial values for the request
 * @returns the response body interpreted as JSON
 */
export async function requestAPI<T>(
  endPoint: string,
  serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  init: RequestInit = {}
): Promise<T> {
  const requestUrl = URLExt.join(
    serverSettings.baseUrl,
    'jupyter-burst', // our server extension's API namespace
    endPoint
  );

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      requestUrl,
      init,
      serverSettings
    );
  } catch (error) {
    throw new ServerConnection.NetworkError(error as any);
  }

  let data: any = await response.text();

  if (data.length > 0) {
    try {
      data = JSON.parse(data);
    } catch (error) {
      console.log('Not a JSON response body.', response);
    }
  }

  if (!response.ok) {
    // The server extension says what went wrong in one line: {"error": "..."}.
    const text =
      typeof data === 'string' ? data : data.error || data.message || `HTTP ${response.status}`;
    throw new ServerConnection.ResponseError(response, text);
  }

  return data;
}
