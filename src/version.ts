import { readFileSync } from 'node:fs';

/**
 * The package's version, read from its package.json. The file sits one folder up from the sources and two from
 * the compiled `dist/src`, so walk up from this module until the package's own manifest is found.
 */
function readVersion(): string {
  for (let dir = new URL('.', import.meta.url); ; dir = new URL('..', dir)) {
    try {
      const manifest = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
      if (manifest.name === 'forge-kernel' && typeof manifest.version === 'string') return manifest.version;
    } catch {
      // not here: keep walking up
    }
    if (dir.pathname === '/') throw new Error('forge-kernel: package.json not found above ' + import.meta.url);
  }
}

/** The running forge-kernel version (semver). */
export const VERSION: string = readVersion();
