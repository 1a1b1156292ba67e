import { Notification } from '@jupyterlab/apputils';

/**
 * How the extension tells the user something failed: a JupyterLab notification (a toast,
 * kept in the notification center) with one line, the server's own when it sent one.
 * One place, so that no failure ends only on the console or in a blocking alert.
 */
export function notifyError(message: string): void {
  Notification.error(message, { autoClose: ERROR_SHOWN_MS });
}

/** Long enough to read a line and click it away; the notification center keeps it after. */
const ERROR_SHOWN_MS = 10_000;

/** A failure as one line (the server's own line when it sent one). */
export function errorMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}

/** Something the user should do first (not a failure), as a notification. */
export function notifyWarning(message: string): void {
  Notification.warning(message, { autoClose: ERROR_SHOWN_MS });
}
