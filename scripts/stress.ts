// `npm run test:stress`: the whole suite (`npm test`) while two busy processes load the machine, as a shared CI
// runner or a developer's laptop in a build would. It must pass: tests poll with deadlines scaled by
// FORGE_TEST_SLOWDOWN rather than deciding a pass on how fast this machine is. Not part of `npm test`.
import { spawn, type ChildProcess } from 'node:child_process';

/** Each busy process keeps one core at work: arithmetic, allocation and garbage, in slices so it stays killable. */
const BUSY = `
let keep = [];
for (;;) {
  let x = 0;
  for (let i = 0; i < 2e6; i++) x = (x * 31 + i) % 1000003;
  keep.push(new Array(1000).fill(x));
  if (keep.length > 2000) keep = [];
}`;

const busy: ChildProcess[] = Array.from({ length: Number(process.env.FORGE_STRESS_PROCESSES ?? 2) }, () => spawn(process.execPath, ['-e', BUSY], { stdio: 'ignore' }));
const stopBusy = (): void => {
  for (const child of busy) child.kill('SIGKILL');
};
process.on('exit', stopBusy);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    stopBusy();
    process.exit(130);
  });
}

const slowdown = process.env.FORGE_TEST_SLOWDOWN ?? '3';
console.log(`test:stress: npm test beside ${busy.length} busy processes (FORGE_TEST_SLOWDOWN=${slowdown})`);
const started = Date.now();
const test = spawn('npm', ['test', '--', ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, FORGE_TEST_SLOWDOWN: slowdown } });
test.on('exit', (code, signal) => {
  stopBusy();
  console.log(`test:stress: npm test ${code === 0 ? 'passed' : `failed (${signal ?? `exit ${String(code)}`})`} in ${Math.round((Date.now() - started) / 1000)} s under load`);
  process.exit(code ?? 1);
});
