/**
 * The overlay ABI: how the host and an AssemblyScript overlay talk. Defined once here; the SDK in
 * `overlays-as/sdk/` declares the same imports and exports (a test compares its compiled imports with this file).
 *
 * - Every lifecycle export takes one AssemblyScript `string` (the JSON input) and returns one (the JSON output):
 *   `export function run(input: string): string`. Strings are UTF-16 in the overlay's memory, allocated with the
 *   runtime's exported `__new`; the object header's `rtSize` (the u32 before the data) is the byte length.
 * - Host functions are imported from the `forge` module; the AssemblyScript runtime's own imports come from `env`.
 */
export const ABI = Object.freeze({
  /** Import module of the host functions (`@external("forge", "log")`). */
  hostModule: 'forge',
  /** Import module of the AssemblyScript runtime (`abort`, `trace`, `seed`). */
  runtimeModule: 'env',
  /** Runtime imports every overlay may use without a capability. */
  runtimeImports: ['abort', 'trace', 'seed'] as readonly string[],
  /** Lifecycle exports the kernel knows; `run` is required. */
  lifecycleExports: ['initialize', 'run', 'healthCheck', 'shutdown'] as readonly string[],
  requiredExports: ['run'] as readonly string[],
  /** Runtime exports the host needs to pass strings in (`--exportRuntime`). */
  allocExport: '__new',
  memoryExport: 'memory',
  /** AssemblyScript's class id of `String`. */
  stringClassId: 2,
  /** Offset of the `rtSize` field (byte length) before an object's data. */
  sizeOffset: 4,
  /** Largest JSON input accepted for one call (UTF-16 bytes in the overlay: two per code unit). */
  maxInputBytes: 1024 * 1024,
  /** Largest JSON output read back from one call (bytes). */
  maxOutputBytes: 4 * 1024 * 1024,
  /** `seed` always returns this: Math.random in an overlay is deterministic, like its fuel. */
  randomSeed: 0x5eed,
});

/** What a granted capability lets an overlay import. */
export const CAPABILITIES = ['LOGGING', 'EVENT_PUBLISH', 'DATABASE_READ', 'DATABASE_WRITE'] as const;
export type Capability = (typeof CAPABILITIES)[number];

export function isCapability(value: unknown): value is Capability {
  return typeof value === 'string' && (CAPABILITIES as readonly string[]).includes(value);
}
