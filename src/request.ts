import { URLExt } from '@jupyterlab/coreutils';

import { ServerConnection } from '@jupyterlab/services';

/**
 * Call the jupyter-burst server extension: the only way the frontend talks to the server.
 * A failure is thrown with the server's own one-line message (`{"error": "..."}`), which
 * the caller shows the user; nothing is written to the console here.
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
    } catch {
      // Not JSON (a proxy's error page, say): the text itself is the answer.
    }
  }

  if (!response.ok) {
    throw new ServerConnection.ResponseError(
      response,
      errorLine(data, response.status)
    );
  }
  return data;
}

/** The server extension's one line (`{"error": "..."}`), else the best line there is. */
export function errorLine(data: unknown, status: number): string {
  if (typeof data === 'string') {
    const first = data.trim().split('\n')[0];
    return first || `HTTP ${status}`;
  }
  const body = (data ?? {}) as { error?: unknown; message?: unknown };
  const text = body.error ?? body.message;
  return typeof text === 'string' && text ? text : `HTTP ${status}`;
}
