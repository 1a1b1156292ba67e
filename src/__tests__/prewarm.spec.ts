import { afterEach, describe, expect, it, vi } from 'vitest';

import { burstLine, Prewarmer } from '../prewarm';

afterEach(() => {
  vi.useRealTimers();
});

describe('pre-warm', () => {
  it('reads the options of a %%burst cell once its body is being written', () => {
    expect(burstLine('%%burst gpus=2 cluster=exp\nx = 1')).toBe(
      'gpus=2 cluster=exp'
    );
    expect(burstLine('%%burst\n')).toBe('');
    expect(burstLine('%%burst  idle=5 \r\nx')).toBe('idle=5');
    expect(burstLine('%%burst gpus=2')).toBeNull(); // still typing the options
    expect(burstLine('%%bursty\nx')).toBeNull();
    expect(burstLine('x = 1\n%%burst\n')).toBeNull();
    expect(burstLine('%burst status\n')).toBeNull();
  });

  it('asks once per first line, after the typing pauses', async () => {
    vi.useFakeTimers();
    const ask = vi.fn(() => Promise.resolve({ state: 'starting' }));
    const prewarmer = new Prewarmer(ask, 1000);
    prewarmer.edited('c1', '%%burst\n');
    prewarmer.edited('c1', '%%burst\nx');
    vi.advanceTimersByTime(999);
    expect(ask).not.toHaveBeenCalled();
    prewarmer.edited('c1', '%%burst\nx =');
    vi.advanceTimersByTime(1000);
    expect(ask).toHaveBeenCalledTimes(1);
    expect(ask).toHaveBeenCalledWith('');
    prewarmer.edited('c1', '%%burst\nx = 1'); // the body changes, the first line does not
    vi.advanceTimersByTime(1000);
    expect(ask).toHaveBeenCalledTimes(1);
    prewarmer.edited('c1', '%%burst gpus=2\nx = 1');
    prewarmer.edited('c2', 'y = 2\n');
    vi.advanceTimersByTime(1000);
    expect(ask).toHaveBeenCalledTimes(2);
    expect(ask).toHaveBeenLastCalledWith('gpus=2');
    prewarmer.edited('c3', '%%burst\nz');
    prewarmer.dispose();
    vi.advanceTimersByTime(1000);
    expect(ask).toHaveBeenCalledTimes(2);
  });
});
