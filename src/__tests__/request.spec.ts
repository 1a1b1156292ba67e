import { describe, expect, it } from 'vitest';

import { errorLine } from '../request';

describe('a refused request', () => {
  it("says the server extension's own line", () => {
    expect(errorLine({ error: "no running cluster named 'x'" }, 404)).toBe(
      "no running cluster named 'x'"
    );
    expect(errorLine({ message: 'Forbidden' }, 403)).toBe('Forbidden');
  });

  it('says the status when the server sent no line', () => {
    expect(errorLine('', 502)).toBe('HTTP 502');
    expect(errorLine({}, 500)).toBe('HTTP 500');
    expect(errorLine(null, 500)).toBe('HTTP 500');
    expect(errorLine('Bad Gateway\n<html>...', 502)).toBe('Bad Gateway');
  });
});
