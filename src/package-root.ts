import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Finds the forge-kernel package's own folder by walking up from this module to the package.json that names it.
 * Sources sit one folder below it (`src/`) and compiled code two (`dist/src/`), so a fixed `..` count is right in
 * one of them only; the walk is right in a checkout, in `dist/` and in `node_modules/forge-kernel` alike.
 */
interface PackageJson {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
}

function findPackageRoot(): { root: string; manifest: PackageJson } {
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Partial<PackageJson>;
      if (manifest.name === 'forge-kernel' && typeof manifest.version === 'string') return { root: dir, manifest: manifest as PackageJson };
    } catch {
      // no package.json here: keep walking up
    }
    if (dirname(dir) === dir) throw new Error(`forge-kernel: its package.json was not found above ${start}; the package is incomplete, install it again.`);
  }
}

const found = findPackageRoot();

/** The forge-kernel package's folder (the one holding its package.json, asconfig.json and overlays-as/). */
export const PACKAGE_ROOT: string = found.root;

/** The running forge-kernel version (semver). */
export const VERSION: string = found.manifest.version;

/** The version range the package declares for one of its runtime dependencies (pinned: an exact version). */
export function dependencyRange(name: string): string | undefined {
  return found.manifest.dependencies?.[name];
}

/** A path inside the package, e.g. `packagePath('overlays-as', 'sdk')`. */
export function packagePath(...segments: string[]): string {
  return join(PACKAGE_ROOT, ...segments);
}
