import { BurstStore } from './store';

/** Classes the kernel gives an in-cell status's cancel button (jupyter_burst/kernel/cell_status.py). */
const CANCEL_CLASS = 'jp-BurstCell-cancel';
const JOB_CLASS_PREFIX = 'jp-BurstCell-job-';

/**
 * Cancel buttons in `%%burst` cells. A foreground cell keeps its kernel busy, so the
 * kernel cannot hear its own widget's click: the page asks the server extension instead,
 * which tells the running cell through the ledger.
 */
export function listenForCellCancel(
  store: BurstStore,
  root: HTMLElement = document.body
): () => void {
  const onClick = (event: MouseEvent) => {
    const button = (event.target as Element | null)?.closest?.(
      `.${CANCEL_CLASS}`
    );
    if (!button) {
      return;
    }
    const jobId = jobOf(button);
    if (jobId === null) {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
    (button as HTMLButtonElement).disabled = true;
    // The store tells the user why in a notification; the button can be clicked again.
    void store.cancelJob(jobId).catch(() => {
      (button as HTMLButtonElement).disabled = false;
    });
  };
  root.addEventListener('click', onClick, true);
  return () => root.removeEventListener('click', onClick, true);
}

/** The job id from an element's `jp-BurstCell-job-<id>` class, or null. */
export function jobOf(element: Element): string | null {
  for (const name of Array.from(element.classList)) {
    if (name.startsWith(JOB_CLASS_PREFIX)) {
      return name.slice(JOB_CLASS_PREFIX.length);
    }
  }
  return null;
}
