import { ensureDebianPackage, type Reporter } from '../services/common.ts';

/**
 * The headless Chromium the inspector's end-to-end tests drive (through playwright-core): Debian's `chromium`,
 * installed with apt-get when missing and this process may. `CHROMIUM_PATH` points at another build instead.
 */
export async function ensureChromium(report: Reporter = (line) => process.stderr.write(`[browser] ${line}\n`)): Promise<string> {
  if (process.env.CHROMIUM_PATH !== undefined && process.env.CHROMIUM_PATH !== '') return process.env.CHROMIUM_PATH;
  return ensureDebianPackage('chromium', 'chromium', {
    report,
    fix: 'Install it (Debian: apt-get install -y chromium), or set CHROMIUM_PATH to a Chromium or Chrome binary.',
    codes: { missing: 'CHROMIUM_MISSING', failed: 'CHROMIUM_INSTALL_FAILED' },
  });
}

/** Flags for a headless Chromium in a container: no sandbox (root), no GPU, nothing fetched from the network. */
export const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-extensions', '--no-first-run'];

if (import.meta.main) process.stdout.write(`${await ensureChromium()}\n`);
