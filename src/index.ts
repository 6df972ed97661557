export { ForgeError, InvalidInputError, isForgeError, MAX_OVERLAY_MESSAGE, readableMessage } from './errors.ts';
export { createLogger, type LogFormat, type LogLevel, type Logger, type LoggerConfig } from './logger.ts';
export { VERSION } from './package-root.ts';
export { InvalidManifestError, parseManifest, parseManifestText, PHASES, type ManifestLocation, type ManifestText, type OverlayManifest, type Phase } from './manifest.ts';
export { ABI, CAPABILITIES, type Capability } from './wasm/abi.ts';
export {
  CallCancelledError,
  CapabilityError,
  DeadlineExceededError,
  ExportNotFoundError,
  HashMismatchError,
  InstanceTerminatedError,
  InvalidCallInputError,
  InvalidEventError,
  InvalidModuleError,
  InvalidOutputError,
  MemoryLimitError,
  OutOfFuelError,
  OverlayTrapError,
  ReservedEventTypeError,
  StackOverflowError,
  TrustError,
} from './wasm/errors.ts';
export { loadWasmOverlay, type CallOptions, type CallResult, type LoadWasmOptions, type OverlayEngine, type PublishedEvent, type SecurityMode } from './wasm/engine.ts';
export { DEFAULT_MAX_STACK_BYTES, FUEL_COSTS } from './wasm/fuel-meter.ts';
export type { CallCaller, HostCallContext, HostCallRecord, HostFunction, HostFunctionSignature, HostTape, OverlayEvent, OverlayLogLine } from './wasm/host-functions.ts';
export { GraphUnavailableError } from './wasm/graph-unavailable.ts';
export { MeteredModuleCache } from './wasm/metered-cache.ts';
export { loadNativeOverlay, type NativeContext, type NativeOverlay, type TrustedRegistration } from './wasm/trusted-engine.ts';
export { createKernel, type Cascades, type JournalOption, type Kernel, type KernelOptions, type ReplayOptions } from './kernel.ts';
export { firstDifference, ReplayDivergenceError, type CallDifference, type ReplayReport } from './journal/replay.ts';
export { fromJsonLines, JournalEntryError, JournalInputError, JournalUnavailableError, JOURNAL_FORMAT, toJsonLines, type AppendOptions, type RecordedOverlay, type EntryBodies, type EntryKind, type Journal, type JournalEntry, type NewEntry, type RetentionPolicy, type StreamHead, type StreamType } from './journal/journal.ts';
export { MemoryJournal } from './journal/memory-journal.ts';
export { SqliteJournal, type SqliteJournalOptions } from './journal/sqlite-journal.ts';
export { BusStoppedError, HandlerTimeoutError, QueueFullError, SubscriptionError, type Bus, type BusOptions, type DeadLetter, type Handler, type SubscribeSpec } from './bus/bus.ts';
export { HopLimitError, InvalidEventInputError, PRIORITIES, type BusEvent, type Priority, type PublishInput } from './bus/event.ts';
export { CascadeError, type CascadeView } from './cascade/cascades.ts';
export {
  CircuitOpenError,
  DependencyError,
  InsufficientTrustError,
  OverlayInactiveError,
  OverlayInitializationError,
  OverlayNotFoundError,
  OverlayRegistry,
  type HealthReport,
  type OverlayHandle,
} from './overlays/registry.ts';
export type { ExecutionRecord } from './overlays/history.ts';
export type { OverlayStats } from './overlays/call-stats.ts';
export { circuitBreakerMachine, DEFAULT_BREAKER_CONFIG, type BreakerConfig, type BreakerState } from '../actors/circuit-breaker.ts';
export { overlayMachine, type OverlayState } from '../actors/overlay.ts';
export type { StoreOption } from './kernel.ts';
export { CypherGuard, CypherRejectedError, type CypherGuardOptions } from './store/cypher-guard.ts';
export { GraphQueryError, graphHostFunctions, StoreUnavailableError, type GraphHostOptions } from './store/graph-host.ts';
export { MemoryStore } from './store/memory-store.ts';
export { Neo4jStore, type Neo4jStoreOptions } from './store/neo4j-store.ts';
export type { AuditEntry, ChainRecord, DeadLetterRecord, HopRecord, OverlayRegistration, RunSnapshot, Store } from './store/store.ts';
export { WriteBehindBuffer, type WriteBehindOptions } from './store/write-behind.ts';
export { pipelineMachine, type Decision, type OverlayOutcome, type PhaseOutcome, type PhaseSettings, type PipelineStatus, type RunConfig, type RunData } from '../actors/pipeline.ts';
export {
  DEFAULT_PHASE_SETTINGS,
  PipelineConfigError,
  PipelineInputError,
  type PhaseContext,
  type PhaseFunctions,
  type PipelineHooks,
  type RunOptions,
  type RunResult,
} from './pipeline/config.ts';
export { PipelineBusyError, Pipelines, PipelinesStoppedError, RunNotFoundError, type PipelineOptions, type PipelineStats, type PhaseStats } from './pipeline/pipelines.ts';
export { InvalidDecisionError, PipelineRun, RunStateError, type PipelineClock } from './pipeline/run.ts';
export { buildExampleOverlays, EXAMPLE_NAMES, type ExampleBuildOptions } from './build/examples.ts';
export { buildOverlays, type BuildOptions, type BuildResult, type BuiltManifest } from './build/build.ts';
export { CompileError, SDK_IMPORT } from './build/asc.ts';
export { BINARYEN_VERSION, MeterUnavailableError } from './wasm/binaryen.ts';
export { InspectionAdapter, stateName, type InspectionRecord } from './inspect/adapter.ts';
export { ACTOR_KINDS, ActorCatalog, type ActorKind, type CatalogEntry } from './inspect/catalog.ts';
export { activeStateIds, MACHINES, statechart, toDot, toMermaid, type Statechart, type StateView, type TransitionView } from './inspect/statechart.ts';
export { layoutStatechart, type StatechartLayout } from './inspect/layout.ts';
export { CONTROL_ACTIONS, DEFAULT_INSPECTOR_PORT, Inspector, InspectorError, type InspectorHandle, type InspectorListenOptions } from './inspect/server.ts';
export { cascadeMachine } from '../actors/cascade.ts';
