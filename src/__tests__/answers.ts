/** What an idle server extension answers, by endpoint (no cluster, no job, nothing spent). */

const zero = {
  usd: '$0.00',
  exact: '0',
  notional: { usd: '$0.00', exact: '0' },
  shown: '$0.00'
};

export const IDLE_ANSWERS: Record<string, unknown> = {
  clusters: [],
  cost: {
    now: 0,
    running: { per_hour: zero, so_far: zero },
    jobs: [],
    today: zero,
    month: zero,
    budget: null
  },
  jobs: [],
  checkpoints: [],
  starts: []
};

/** The answer to `path` ("jobs?limit=200" is "jobs"). */
export async function idleAnswer(path: string): Promise<any> {
  return IDLE_ANSWERS[path.split('?')[0]];
}
