import { describe, expect, it } from 'vitest';

describe('runtime', () => {
  it('runs the project scripts on Node 24 or newer (the `node` devDependency), not the system Node', () => {
    const major = Number(process.versions.node.split('.')[0]);
    expect(major).toBeGreaterThanOrEqual(24);
  });

  it('has JSPI (WebAssembly.Suspending and WebAssembly.promising) for the relaxed engine', () => {
    expect(typeof WebAssembly.Suspending).toBe('function');
    expect(typeof WebAssembly.promising).toBe('function');
  });
});
