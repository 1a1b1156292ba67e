import { nullTranslator } from '@jupyterlab/translation';
import { describe, expect, it } from 'vitest';

import {
  formatDuration,
  formatSeconds,
  IStart,
  startPhases,
  startSummary,
  formatSlots,
  formatUsd,
  LogBuffer,
  tickDecimals,
  tickedMicros,
  toMicros
} from '../model';

const trans = nullTranslator.load('jupyter_burst');

describe('money', () => {
  it('reads the exact decimals the server sends, exponent forms included', () => {
    expect(toMicros('1.2345')).toBe(1_234_500n);
    expect(toMicros('0E-7')).toBe(0n);
    expect(toMicros('12')).toBe(12_000_000n);
    expect(toMicros('0.0000005')).toBe(1n); // half a millionth rounds up
    expect(toMicros('0.0000004')).toBe(0n);
    expect(toMicros('1.5E-5')).toBe(15n);
    expect(toMicros('-2.5')).toBe(-2_500_000n);
    expect(() => toMicros('$1')).toThrow(/not a decimal amount/);
  });

  it('shows dollars with thousands separators, to the cent or finer', () => {
    expect(formatUsd(1_234_567_890n)).toBe('$1,234.57');
    expect(formatUsd(4_200n, 4)).toBe('$0.0042');
    expect(formatUsd(0n)).toBe('$0.00');
  });

  it('ticks without drift: a day at $3.60/h is exactly $86.40', () => {
    expect(tickedMicros('0', '3.60', 24 * 3600)).toBe(86_400_000n);
    expect(formatUsd(tickedMicros('1.10', '3.60', 1))).toBe('$1.10');
    expect(formatUsd(tickedMicros('1.10', '3.60', 1), 4)).toBe('$1.1010');
    // A clock that went back (a fetch answered late) never makes the figure go down.
    expect(tickedMicros('1.10', '3.60', -5)).toBe(1_100_000n);
  });

  it('shows a cheap cluster with more decimals, so the figure visibly ticks', () => {
    expect(tickDecimals('0')).toBe(2);
    expect(tickDecimals('0.50')).toBe(4);
    expect(tickDecimals('98.32')).toBe(2);
  });
});

describe('formatSlots', () => {
  it('says GPUs, and CPU slots apart (a stand-in is not a GPU)', () => {
    expect(formatSlots(1, 0)).toBe('1 GPU');
    expect(formatSlots(8, 0)).toBe('8 GPUs');
    expect(formatSlots(0, 1)).toBe('1 CPU slot');
    expect(formatSlots(4, 2)).toBe('4 GPUs + 2 CPU slots');
    expect(formatSlots(0, 0)).toBe('0 GPUs');
  });
});

describe('formatDuration', () => {
  it('says seconds, minutes, hours', () => {
    expect(formatDuration(42.9)).toBe('42 s');
    expect(formatDuration(185)).toBe('3 min 5 s');
    expect(formatDuration(2 * 3600 + 7 * 60)).toBe('2 h 07 min');
    expect(formatDuration(-3)).toBe('0 s');
  });
});

describe('LogBuffer', () => {
  const line = (i: number, rank = 0) => ({
    ts: i,
    rank,
    stream: 'stdout',
    text: `line ${i}`
  });

  it('keeps the newest lines and counts what left the view', () => {
    const buffer = new LogBuffer(100);
    buffer.add({ lines: Array.from({ length: 250 }, (_, i) => line(i)) });
    expect(buffer.lines.length).toBe(100);
    expect(buffer.lines[0].text).toBe('line 150');
    expect(buffer.lines[99].text).toBe('line 249');
    expect(buffer.dropped).toBe(150);
  });

  it('adds the lines the server left out of a flood to the count', () => {
    const buffer = new LogBuffer(100);
    expect(buffer.add({ lines: [line(9000)], dropped: 8999 })).toBe(true);
    expect(buffer.dropped).toBe(8999);
    expect(buffer.add({ lines: [], dropped: 0 })).toBe(false);
  });

  it('filters by rank and by a case-blind search', () => {
    const buffer = new LogBuffer();
    buffer.add({
      lines: [
        line(1, 0),
        line(2, 1),
        { ts: 3, rank: 1, stream: 'stderr', text: 'Loss 0.5' }
      ]
    });
    expect([...buffer.ranks].sort()).toEqual([0, 1]);
    expect(buffer.view(1, '').map(l => l.ts)).toEqual([2, 3]);
    expect(buffer.view(null, 'loss').map(l => l.ts)).toEqual([3]);
    expect(buffer.view(0, 'loss')).toEqual([]);
    buffer.clear();
    expect(buffer.lines.length).toBe(0);
    expect(buffer.dropped).toBe(0);
  });
});

describe('cluster starts', () => {
  const start: IStart = {
    id: 's',
    name: 'default',
    provider: 'local',
    purpose: 'cell',
    state: 'starting',
    cluster_id: null,
    error: null,
    started: 0,
    ended: null,
    seconds: 2.5,
    phases: [
      {
        phase: 'quote',
        label: 'quote',
        detail: '',
        done: null,
        total: null,
        started: 0,
        seconds: 0.04,
        current: false
      },
      {
        phase: 'booting',
        label: 'booting',
        detail: '',
        done: null,
        total: null,
        started: 0,
        seconds: 2.4,
        current: true
      }
    ]
  };

  it('shows seconds in tenths while they matter', () => {
    expect(formatSeconds(0.04)).toBe('0.0 s');
    expect(formatSeconds(9.94)).toBe('9.9 s');
    expect(formatSeconds(12.7)).toBe('12 s');
    expect(formatSeconds(245)).toBe('4 min 05 s');
    expect(formatSeconds(-1)).toBe('0.0 s');
  });

  it('counts the phase under way on from the server figure; a finished start stays put', () => {
    expect(startSummary(start, 1, trans)).toBe('starting for 3.5 s');
    expect(startPhases(start, 1).map(p => `${p.label} ${p.seconds}`)).toEqual([
      'quote 0.0 s',
      'booting 3.4 s'
    ]);
    const done = { ...start, state: 'running' as const, ended: 3 };
    expect(startSummary(done, 100, trans)).toBe('started in 2.5 s');
    expect(
      startSummary({ ...done, state: 'failed' as const }, 100, trans)
    ).toBe('failed after 2.5 s');
  });
});
