/// <reference types="vite/client" />
import { describe, expect, it } from 'vitest';

import manifest from '../../package.json';

/**
 * Every package the extension imports is declared in package.json: one that arrives only
 * as another package's dependency can vanish or change under us with any update.
 */

const SOURCES: Record<string, string> = import.meta.glob('../*.{ts,tsx}', {
  query: '?raw',
  import: 'default',
  eager: true
});
const TESTS: Record<string, string> = import.meta.glob('./*.{ts,tsx}', {
  query: '?raw',
  import: 'default',
  eager: true
});

/** The packages a source imports ("@scope/name" or "name"), relative imports left out. */
function importedPackages(source: string): string[] {
  const statement =
    /^(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'|^import\s+'([^']+)'/gm;
  return [...source.matchAll(statement)]
    .map(m => m[1] ?? m[2])
    .filter(s => !s.startsWith('.'))
    .map(s =>
      s
        .split('/')
        .slice(0, s.startsWith('@') ? 2 : 1)
        .join('/')
    );
}

/** "file: package" for each import of `sources` that `declared` lacks. */
function undeclared(
  sources: Record<string, string>,
  declared: Set<string>
): string[] {
  return Object.entries(sources)
    .filter(([file]) => !file.endsWith('.d.ts'))
    .flatMap(([file, source]) =>
      importedPackages(source)
        .filter(name => !declared.has(name))
        .map(name => `${file}: ${name}`)
    );
}

describe('package.json', () => {
  it('declares every package the extension imports as a dependency', () => {
    expect(Object.keys(SOURCES).length).toBeGreaterThan(5);
    expect(
      undeclared(SOURCES, new Set(Object.keys(manifest.dependencies)))
    ).toEqual([]);
  });

  it('declares every package the unit tests import', () => {
    const declared = new Set([
      ...Object.keys(manifest.dependencies),
      ...Object.keys(manifest.devDependencies)
    ]);
    expect(undeclared(TESTS, declared)).toEqual([]);
  });
});
