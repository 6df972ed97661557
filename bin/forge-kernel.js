#!/usr/bin/env node
// In a checkout the TypeScript sources run directly (Node >= 22.18 strips types); an installed package runs the
// compiled dist/ (Node refuses to strip types under node_modules, and the published package ships no src/).
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const entry = existsSync(source) ? source : new URL('../dist/src/cli/main.js', import.meta.url);
const { runProcess } = await import(entry.href);
await runProcess();
