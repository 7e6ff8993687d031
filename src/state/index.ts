// Public API of the state module: load and validate a state directory.
export * from './types.js';
export { loadState, loadStateOrThrow, type LoadResult } from './load.js';
export { validateSemantics, locateBySource, type SemanticInput, type Locator, type Located } from './semantic.js';
export {
  formatDiagnostics,
  sortDiagnostics,
  StateError,
  type DiagnosticLocation,
  type FieldPath,
} from './diagnostics.js';
