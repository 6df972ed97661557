import { describe, expect, it } from 'vitest';
import { ForgeError, InvalidInputError, isForgeError } from '../src/errors.ts';

class OutOfBeansError extends ForgeError {
  constructor(used: number) {
    super('OUT_OF_BEANS', `Ran out of beans after ${used}: raise the bean budget.`, { details: { used } });
  }
}

describe('ForgeError', () => {
  it('carries a stable code, its subclass name, frozen details and its cause', () => {
    const cause = new Error('disk full');
    const error = new ForgeError('STORE_FULL', 'The store is full: free space and retry.', { cause, details: { bytes: 10 } });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('STORE_FULL');
    expect(error.name).toBe('ForgeError');
    expect(error.cause).toBe(cause);
    expect(Object.isFrozen(error.details)).toBe(true);
    expect(error.details).toEqual({ bytes: 10 });
  });

  it('is extended by module errors that keep their own name and code', () => {
    const error = new OutOfBeansError(12);
    expect(error.name).toBe('OutOfBeansError');
    expect(isForgeError(error)).toBe(true);
    expect(isForgeError(error, 'OUT_OF_BEANS')).toBe(true);
    expect(isForgeError(error, 'OTHER')).toBe(false);
    expect(isForgeError(new Error('plain'))).toBe(false);
    expect(isForgeError('OUT_OF_BEANS')).toBe(false);
  });

  it('serializes to { code, message, details } without the stack', () => {
    const json = JSON.parse(JSON.stringify(new InvalidInputError('bad port', { port: -1 }))) as Record<string, unknown>;
    expect(json).toEqual({ code: 'INVALID_INPUT', message: 'bad port', details: { port: -1 } });
  });
});
