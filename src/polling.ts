import { Poll } from '@lumino/polling';

/**
 * How often the extension asks its server extension, in one place. Every poll stands by
 * while nobody can see what it fetches (a hidden browser tab, a closed sidebar) and backs
 * off after a failure, so that a stopped server is not asked every few seconds.
 */

/** The sidebar's views, while the sidebar is shown (ms). */
export const SIDEBAR_REFRESH_MS = 3000;
/** ... and while a cluster is starting, so that its phases show as they begin (ms). */
export const STARTING_REFRESH_MS = 1000;
/** The selected job's new metrics points (ms): the chart under its cell redraws as often. */
export const METRICS_REFRESH_MS = 2000;
/** The status bar's cost while the sidebar is closed: it ticks by itself in between (ms). */
export const COST_REFRESH_MS = 30_000;
/** The longest wait between tries while the server does not answer (ms). */
export const MAX_BACKOFF_MS = 60_000;

/**
 * A poll of `factory` every `interval` ms, backing off on errors up to `MAX_BACKOFF_MS`,
 * standing by while `active()` is false or the page is hidden. Started by `poll.start()`.
 */
export function standbyPoll(
  name: string,
  factory: () => Promise<void>,
  interval: number,
  active: () => boolean
): Poll {
  return new Poll({
    name,
    auto: false,
    factory,
    frequency: {
      interval,
      backoff: true,
      max: Math.max(interval, MAX_BACKOFF_MS)
    },
    standby: () => !active() || 'when-hidden'
  });
}

/** `poll`'s base interval set to `interval` ms, keeping its back-off and its maximum. */
export function setPollInterval(poll: Poll, interval: number): void {
  if (poll.frequency.interval !== interval) {
    poll.frequency = { ...poll.frequency, interval };
  }
}
