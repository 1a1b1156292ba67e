import { describe, expect, it, vi } from 'vitest';

import { jobOf, listenForCellCancel } from '../cellcancel';
import { BurstStore } from '../store';

function cellButton(jobId: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.className = `jupyter-button jp-BurstCell-cancel jp-BurstCell-job-${jobId}`;
  const icon = document.createElement('i');
  button.appendChild(icon);
  document.body.appendChild(button);
  return button;
}

describe('cancel buttons in %%burst cells', () => {
  it('reads the job from the button class', () => {
    expect(jobOf(cellButton('abc123def456'))).toBe('abc123def456');
    expect(jobOf(document.createElement('button'))).toBeNull();
  });

  it('asks the server to cancel the job, even for a click on the icon inside', async () => {
    const cancelJob = vi.fn().mockResolvedValue(undefined);
    const store = { cancelJob } as unknown as BurstStore;
    const stop = listenForCellCancel(store);
    const button = cellButton('0123456789ab');
    (button.firstChild as HTMLElement).click();
    expect(cancelJob).toHaveBeenCalledWith('0123456789ab');
    expect(button.disabled).toBe(true);
    stop();
    button.disabled = false;
    button.click();
    expect(cancelJob).toHaveBeenCalledTimes(1);
  });

  it('lets the user click again when the server refused', async () => {
    // The store tells the user the server's line (store.spec.ts); the button comes back.
    const cancelJob = vi
      .fn()
      .mockRejectedValue(new Error('job is not running'));
    const stop = listenForCellCancel({ cancelJob } as unknown as BurstStore);
    const button = cellButton('feedfacecafe');
    button.click();
    expect(cancelJob).toHaveBeenCalledWith('feedfacecafe');
    await vi.waitFor(() => expect(button.disabled).toBe(false));
    stop();
  });
});
