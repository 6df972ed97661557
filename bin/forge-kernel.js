#!/usr/bin/env node
// In a checkout the TypeScript sources run directly (Node >= 22.18 strips types); an installed package runs the
// compiled dist/ (Node refuses to strip types under node_modules, and the published package ships no src/).
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const compiled = new URL('../dist/src/cli/main.js', import.meta.url);
const canStrip = Boolean(process.features.typescript);
let entry;
if (existsSync(source) && canStrip) entry = source;
else if (existsSync(compiled)) entry = compiled;
else {
  process.stderr.write(
    `forge-kernel: Node ${process.versions.node} cannot run the TypeScript sources. Use Node >= 22.18 ` +
      '(in this checkout: npx forge-kernel, or npm run …, which run the Node 24 from node_modules), or run npm run build.\n',
  );
  process.exit(1);
}
const { runProcess } = await import(entry.href);
await runProcess();
