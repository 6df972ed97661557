// npm run build (and npm install / npm pack in a checkout, through prepare: prepare does nothing where this script is
// absent, i.e. in an installed package that npm links): the package as it is published. Compiles src/ and actors/ into a
// clean dist/ (no file of a removed source survives), then puts the example overlays, built, in dist/examples/ so
// that an installed package runs them without compiling anything.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { buildExampleOverlays, EXAMPLE_NAMES, PREBUILT_EXAMPLES_DIR } from '../src/build/examples.ts';
import { PACKAGE_ROOT } from '../src/package-root.ts';

const dist = join(PACKAGE_ROOT, 'dist');
rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(PACKAGE_ROOT, 'tsconfig.build.json')], { stdio: 'inherit' });

// Built where the tests and the demo build them too (skipped when unchanged), then copied: the manifests name their
// inputs relative to the sources, so they hold wherever the .wasm files sit.
const built = await buildExampleOverlays({
  outDir: join(PACKAGE_ROOT, '.forge', 'cache', 'examples'),
  onResult: (result, index, total) => process.stderr.write(`[${index + 1}/${total}] ${result.name ?? result.file} ${result.status}\n`),
});
mkdirSync(PREBUILT_EXAMPLES_DIR, { recursive: true });
for (const name of EXAMPLE_NAMES) {
  for (const file of [`${name}.wasm`, `${name}.manifest.json`]) copyFileSync(join(built, file), join(PREBUILT_EXAMPLES_DIR, file));
}
process.stderr.write(`dist/ built: the library, and the ${EXAMPLE_NAMES.length} example overlays in ${PREBUILT_EXAMPLES_DIR}\n`);
