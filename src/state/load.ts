// Reads a state directory (layout: docs/state-format.md) into a ClusterState. Every problem is
// collected and reported at once, each with file, line, column and field.
import path from 'node:path';
import { compareStrings, quoteValue, sortDiagnostics, StateError, type FieldPath } from './diagnostics.js';
import { readStateTree, STATE_LIMITS, wholeFile, type KnownText, type StateFile } from './files.js';
import { validateDocument, type Kind } from './schema.js';
import { statusKeyDiagnostics } from './status-keys.js';
import { locateBySource, validateSemantics, type Located, type Locator, type SemanticInput } from './semantic.js';
import type {
  ClusterSettings,
  ClusterState,
  Diagnostic,
  ForwardSpec,
  GuestSpec,
  HealthCheckSpec,
  NodeSpec,
  SourceRef,
} from './types.js';
import { fastPositions, parseYamlFast, type FastParse } from './yaml-fast.js';
import { listMemo, reuseList, type ListMemo } from './list-reuse.js';
import { locate, parseYamlSource, positionsOf, type NodeBudget, type Positions } from './yaml-source.js';

export interface LoadResult {
  /** Present exactly when `diagnostics` is empty. */
  state?: ClusterState;
  /** Sorted by file and position. */
  diagnostics: Diagnostic[];
}

/** Folders holding one kind of document each, any number of files. */
const FOLDERS: ReadonlyArray<{ folder: string; kind: Kind }> = [
  { folder: 'nodes', kind: 'Node' },
  { folder: 'guests', kind: 'Guest' },
  { folder: 'forwards', kind: 'Forwards' },
];
/** Kinds that live in a state directory (the agent's own config is a Kind too, but not one of these). */
const STATE_KINDS: readonly Kind[] = ['Cluster', 'Node', 'Guest', 'Forwards'];

/** A parsed, schema-checked document; `data` has the schema defaults applied. */
interface LoadedDocument {
  kind: Kind;
  positions: Positions;
  data: unknown; // shape guaranteed by the schema for every object without problems
  /** Where the problems are that make the object holding them unusable for the semantic checks. */
  problems: ProblemIndex;
}

/**
 * What a long-running process (the agent) keeps of its loads, so that loading the next revision
 * reads again only the files that changed, and of a changed file with a long list only the items
 * that changed (src/state/list-reuse.ts). Only files read the fast way (plain, schema-valid) are
 * kept, each with the least value budget the fast way reads it with (FastParse.leastBudget): the
 * same text read with at least that budget reads the same, whatever the files before it charged.
 * The checks across files (semantic.ts) run on every load, over the whole state; what they learn
 * of an unchanged file's list of forwards is kept with that list (src/state/forward-index.ts).
 */
export class LoadMemory {
  /** By file path in the state directory: its last fast reading. */
  files = new Map<string, RememberedFile>();
  /** By file path: its bytes and text as last read (src/state/files.ts). */
  texts = new Map<string, KnownText>();
  /** The clock a file's stat stamp is judged settled by (src/fs/stamp.ts). */
  now: () => number = Date.now;
}

interface RememberedFile {
  kind: Kind;
  text: string;
  /** The least value budget the file reads the same with, and what it charged. */
  leastBudget: number;
  values: number;
  reading: FileReading;
  list?: ListMemo;
}

/**
 * Loads the state in `dir`. With `memory`, files read before are taken from it and it is updated:
 * the result is the same as without (test/state-load-memory.test.ts).
 */
export async function loadState(dir: string, memory?: LoadMemory): Promise<LoadResult> {
  const root = path.resolve(dir);
  const texts = memory && { known: memory.texts, read: new Map<string, KnownText>(), now: memory.now };
  const tree = await readStateTree(root, FOLDERS.map((f) => f.folder), undefined, texts);
  if (memory && texts) memory.texts = texts.read;
  if (!tree.rootReadable) return { diagnostics: tree.diagnostics };
  // Past a size or count limit, parsing what was read would only spend the time the limit saves.
  if (tree.overLimit) return { diagnostics: capDiagnostics(sortDiagnostics(tree.diagnostics)) };
  const diagnostics: Diagnostic[] = [...tree.diagnostics];
  const readings: FileReading[] = [];
  const budget = { nodes: STATE_LIMITS.yamlNodes };
  const kept = new Map<string, RememberedFile>();
  const read = (file: StateFile, kind: Kind) => {
    const result = readFile(file, kind, budget, memory && { memory, kept });
    for (const d of result.diagnostics) diagnostics.push(d);
    readings.push(result);
  };

  if (tree.cluster) read(tree.cluster, 'Cluster');
  for (const { folder, kind } of FOLDERS) {
    const files = tree.folders.get(folder) ?? [];
    const refused = diagnostics.some((d) => d.file === folder || d.file.startsWith(`${folder}/`));
    if (kind === 'Node' && files.length === 0 && !refused) {
      diagnostics.push(wholeFile(`${folder}/`, `no nodes: add one ${folder}/<name>.yaml (kind: Node) per node`));
    }
    for (const file of files) read(file, kind);
  }

  if (memory) memory.files = kept;
  const { input, locator } = joinSpecs(readings.map((r) => r.specs));
  for (const d of validateSemantics(input, locator)) diagnostics.push(d);
  for (const d of await statusKeyDiagnostics(input.nodes, locator)) diagnostics.push(d);
  if (diagnostics.length > 0) return { diagnostics: capDiagnostics(sortDiagnostics(diagnostics)) };

  // Sorted by name, so everything downstream (rulesets, plans, reports) is deterministic.
  const state: ClusterState = {
    dir: root,
    cluster: input.cluster!, // no diagnostics, so cluster.yaml was read and valid
    nodes: byName(input.nodes),
    guests: byName(input.guests),
    forwards: forwardsByName(input.forwardLists ?? [input.forwards]),
  };
  return { state, diagnostics: [] };
}

function byName<T extends { name: string }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => compareStrings(a.name, b.name));
}

/** Each list of forwards sorted by name, kept per list: an unchanged file's list is not sorted again. */
const sortedLists = new WeakMap<readonly ForwardSpec[], ForwardSpec[]>();

/**
 * The forwards of all lists sorted by name: each list sorted (or its kept order), the others'
 * merged into the largest by binary search. Names are unique in a valid state, so this is the
 * order one sort of all of them gives.
 */
function forwardsByName(lists: ReadonlyArray<readonly ForwardSpec[]>): ForwardSpec[] {
  const sorted = lists.map((list) => {
    const known = sortedLists.get(list);
    if (known) return known;
    const made = byName(list);
    sortedLists.set(list, made);
    return made;
  });
  let big: ForwardSpec[] = [];
  for (const list of sorted) if (list.length > big.length) big = list;
  const rest = byName(sorted.filter((list) => list !== big).flat());
  if (rest.length === 0) return [...big];
  // The runs of the largest list between the others' forwards are copied whole (native slices).
  const parts: ForwardSpec[][] = [];
  let from = 0;
  for (const f of rest) {
    const at = firstAfter(big, f.name, from);
    parts.push(big.slice(from, at), [f]);
    from = at;
  }
  parts.push(big.slice(from));
  return ([] as ForwardSpec[]).concat(...parts);
}

/** The first index at or after `from` in `sorted` whose name sorts after `name`. */
function firstAfter(sorted: readonly ForwardSpec[], name: string, from: number): number {
  let lo = from;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareStrings((sorted[mid] as ForwardSpec).name, name) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Like loadState, but throws a StateError listing every problem. */
export async function loadStateOrThrow(dir: string): Promise<ClusterState> {
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new StateError(diagnostics);
  return state;
}

/** One file read: its document, the specs made of it, and its problems. */
interface FileReading {
  document: LoadedDocument;
  specs: DocumentSpecs;
  diagnostics: Diagnostic[];
}

/** The load's memory, and the files it keeps for the next load. */
type Remembering = { memory: LoadMemory; kept: Map<string, RememberedFile> };

/**
 * Parses and schema-checks one file: from memory when it was read before as it is now, the fast
 * way when that finds a valid document, else carefully, with positions for every problem.
 */
function readFile(file: StateFile, kind: Kind, budget: NodeBudget, remembering?: Remembering): FileReading {
  const before = budget.nodes;
  const old = remembering?.memory.files.get(file.file);
  const same = old && old.kind === kind && old.text === file.text && before >= old.leastBudget;
  if (same) budget.nodes -= old.values;
  const fast = same ? old : readValidFast(file, kind, budget, remembering !== undefined, old);
  // A file that is not valid now keeps its last valid reading, to reuse what still matches next time.
  const keep = fast ? { ...fast, kind, text: file.text, values: before - budget.nodes } : old;
  if (remembering && keep) remembering.kept.set(file.file, keep);
  if (fast) return fast.reading;
  const careful = readCarefully(file, kind, budget);
  return { ...careful, specs: specsOf(careful.document) };
}

/** A plain, schema-valid document read without positions; undefined for anything else. */
function readValidFast({ file, text }: StateFile, expected: Kind, budget: NodeBudget, remember: boolean, old?: RememberedFile): { reading: FileReading; leastBudget: number; list?: ListMemo } | undefined {
  // The items of a long list whose text is unchanged are not parsed or schema-checked again.
  const reused = old?.list && old.kind === expected ? reuseList(text, old.list, budget.nodes) : undefined;
  let parsed: FastParse | undefined = reused?.parsed;
  if (reused) {
    // Any schema problem (a wrong kind too) is reported by the careful reading, with its position.
    if (validateDocument(expected, reused.unchecked).length > 0) return undefined;
  } else {
    parsed = parseYamlFast(text, budget);
    if (!parsed || validateDocument(expected, parsed.data).length > 0) return undefined;
  }
  if (!parsed) return undefined;
  budget.nodes -= parsed.values;
  const positions = fastPositions(file, text, parsed);
  const document: LoadedDocument = { kind: expected, positions, data: parsed.data, problems: new ProblemIndex([]) };
  // Only a process that keeps its loads needs the items' memo (it costs a pass over the text).
  const list = reused?.memo ?? (remember && expected === 'Forwards' ? listMemo(text, parsed, 'forwards') : undefined);
  return { reading: { document, specs: specsOf(document), diagnostics: [] }, leastBudget: parsed.leastBudget, ...(list && { list }) };
}

/**
 * Parses and schema-checks one file with positions. A document that cannot be used as a whole (YAML
 * syntax error, wrong kind) comes back with a problem at the root path; its partial data still
 * tells which name it meant to declare.
 */
function readCarefully({ file, text }: StateFile, expected: Kind, budget: NodeBudget): { document: LoadedDocument; diagnostics: Diagnostic[] } {
  const { source, data, diagnostics: syntaxErrors } = parseYamlSource(file, text, budget);
  const positions = positionsOf(source);
  const unusable = (diagnostics: Diagnostic[]) => ({
    document: { kind: expected, positions, data, problems: new ProblemIndex([[]]) },
    diagnostics,
  });

  if (syntaxErrors.length > 0) return unusable(syntaxErrors);
  if (source.doc.contents === null) return unusable([wholeFile(file, `empty document; expected kind ${expected}`)]);
  const kind = member(data, 'kind');
  if (typeof kind === 'string' && kind !== expected) {
    const message = STATE_KINDS.includes(kind as Kind)
      ? `a ${kind} document does not belong in ${folderOf(file)} (expected kind ${expected})`
      : `unknown kind ${quoteValue(kind)} (expected ${expected}; kinds are ${STATE_KINDS.join(', ')})`;
    return unusable([{ ...locate(source, ['kind']), message }]);
  }

  const problems = validateDocument(expected, data);
  const blocking = problems.filter((p) => !p.unknownProperty);
  return {
    document: { kind: expected, positions, data, problems: new ProblemIndex(blocking.map((p) => p.path)) },
    // Locating is per problem; a hostile file may have hundreds of thousands: show the first ones.
    diagnostics: [
      ...problems.slice(0, STATE_LIMITS.diagnostics).map((p) => ({ ...locate(source, p.path, { key: p.unknownProperty }), message: p.message })),
      ...(problems.length > STATE_LIMITS.diagnostics ? [moreProblems(file, problems.length - STATE_LIMITS.diagnostics)] : []),
    ],
  };
}

/** What one document declares, for the semantic checks, and where each object came from. */
interface DocumentSpecs {
  cluster?: ClusterSettings;
  nodes: NodeSpec[];
  guests: GuestSpec[];
  forwards: ForwardSpec[];
  /** Names declared by broken objects. */
  unchecked: { nodes: string[]; guests: string[] };
  /** Where each object came from: objects[i] was made of the value at bases[i] (no map per object: few loads ever ask). */
  positions: Positions;
  objects: Located[];
  bases: FieldPath[];
}

type Origin = { positions: Positions; base: FieldPath };

/**
 * Turns a document into specs for the semantic checks. Objects with schema problems are left out
 * (their problems are already reported), but their names are kept so references to them are not
 * reported a second time.
 */
function specsOf(doc: LoadedDocument): DocumentSpecs {
  const specs: DocumentSpecs = { nodes: [], guests: [], forwards: [], unchecked: { nodes: [], guests: [] }, positions: doc.positions, objects: [], bases: [] };

  /** Builds the object at `base` with `make`, unless a schema problem lies inside it. */
  const objectAt = <T extends Located>(base: FieldPath, make: Converter<T>) => {
    // A problem inside the object, or at a parent of it (a YAML syntax error makes the whole
    // document unusable: problem path []), leaves the object out.
    if (doc.problems.touches(base)) return undefined;
    // No problem inside: the schema guarantees the shape.
    const data = base.reduce(member, doc.data) as Checked<T>;
    const object = make(data, doc.positions.ref(base));
    specs.objects.push(object);
    specs.bases.push(base);
    return object;
  };
  /** A one-object document: its spec or, when broken, at least the name it meant to declare. */
  const single = <T extends Located>(make: Converter<T>, list: T[], brokenNames: string[]) => {
    const object = objectAt([], make);
    if (object) list.push(object);
    else {
      const name = member(doc.data, 'name');
      if (typeof name === 'string') brokenNames.push(name);
    }
  };

  if (doc.kind === 'Cluster') {
    const cluster = objectAt([], toCluster);
    if (cluster) specs.cluster = cluster;
  }
  if (doc.kind === 'Node') single(toNode, specs.nodes, specs.unchecked.nodes);
  if (doc.kind === 'Guest') single(toGuest, specs.guests, specs.unchecked.guests);
  const list = doc.kind === 'Forwards' ? member(doc.data, 'forwards') : undefined;
  if (Array.isArray(list)) {
    list.forEach((_: unknown, i: number) => {
      const forward = objectAt(['forwards', i], toForward);
      if (forward) specs.forwards.push(forward);
    });
  }
  return specs;
}

/** The documents' specs as one input for the semantic checks, with a locator that knows exact YAML ranges. */
function joinSpecs(all: DocumentSpecs[]): { input: SemanticInput; locator: Locator } {
  let cluster: ClusterSettings | undefined;
  // Joined natively (one copy of 50,000 references), not pushed one by one.
  const forwards = ([] as ForwardSpec[]).concat(...all.map((specs) => specs.forwards));
  const input = { nodes: [] as NodeSpec[], guests: [] as GuestSpec[], forwards, unchecked: { nodes: [] as string[], guests: [] as string[] } };
  for (const specs of all) {
    // The last cluster document wins, as before (there is only one cluster.yaml).
    if (specs.cluster) cluster = specs.cluster;
    for (const n of specs.nodes) input.nodes.push(n);
    for (const g of specs.guests) input.guests.push(g);
    for (const n of specs.unchecked.nodes) input.unchecked.nodes.push(n);
    for (const g of specs.unchecked.guests) input.unchecked.guests.push(g);
  }
  // Merged only when a diagnostic asks: a valid state never needs it.
  let origins: Map<Located, Origin> | undefined;
  const locator: Locator = (object, fieldPath) => {
    origins ??= originsOf(all);
    const origin = origins.get(object);
    return origin ? origin.positions.locate([...origin.base, ...fieldPath]) : locateBySource(object, fieldPath);
  };
  // Each file's list as it was read: an unchanged file's list is the same array, and so is known to the checks.
  const forwardLists = all.map((specs) => specs.forwards);
  return { input: { ...(cluster && { cluster }), ...input, forwardLists }, locator };
}

function originsOf(all: DocumentSpecs[]): Map<Located, Origin> {
  const origins = new Map<Located, Origin>();
  for (const { positions, objects, bases } of all) {
    for (let i = 0; i < objects.length; i++) origins.set(objects[i] as Located, { positions, base: bases[i] as FieldPath });
  }
  return origins;
}

// The converters pick fields explicitly (dropping apiVersion/kind); values are schema-checked and
// defaulted already.
type Converter<T> = (data: Checked<T>, source: SourceRef) => T;
/** A schema-checked, defaulted object: the spec's fields without the source reference. */
type Checked<T> = Omit<T, 'source'>;

/** `value[key]` when value is an object (or array), else undefined: for data not yet checked. */
function member(value: unknown, key: string | number): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string | number, unknown>)[key] : undefined;
}

function toCluster(d: Checked<ClusterSettings>, source: SourceRef): ClusterSettings {
  return {
    name: d.name,
    guestSubnet: d.guestSubnet,
    gatewayIP: d.gatewayIP,
    ...(d.ipv6 && { ipv6: { ...d.ipv6 } }),
    ...(d.gatewayMAC !== undefined && { gatewayMAC: d.gatewayMAC.toLowerCase() }),
    nat: {
      mode: d.nat.mode,
      forwardSnat: d.nat.forwardSnat,
      ...(d.nat.portStride !== undefined && { portStride: d.nat.portStride }),
      ...(d.nat.ctSync !== undefined && { ctSync: { ...d.nat.ctSync } }),
    },
    tables: { nat: d.tables.nat, arp: d.tables.arp, raw: d.tables.raw, sync: d.tables.sync, gwmac: d.tables.gwmac, ...(d.ipv6 && { nat6: d.tables.nat6 }), ...(d.tables.migration !== undefined && { migration: d.tables.migration }) },
    // The schema fills in health and rollout (useDefaults), so both are present here.
    health: { windowSeconds: d.health!.windowSeconds, intervalSeconds: d.health!.intervalSeconds, checks: (d.health!.checks ?? []).map((c) => ({ ...c })) },
    rollout: { waves: (d.rollout!.waves ?? []).map((w) => [...w]), soakSeconds: d.rollout!.soakSeconds },
    ...(d.suspend && { suspend: { reason: d.suspend.reason } }),
    ...(d.statusSignatures && { statusSignatures: d.statusSignatures }),
    ...(d.windows?.length && { windows: d.windows.map((w) => ({ ...w })) }),
    source,
  };
}

function toNode(d: Checked<NodeSpec> & { health?: { checks?: HealthCheckSpec[] } }, source: SourceRef): NodeSpec {
  // The file's `health.checks` is the spec's healthChecks.
  return {
    name: d.name,
    uplink: { interface: d.uplink.interface, publicIP: d.uplink.publicIP, ...(d.uplink.publicIPv6 !== undefined && { publicIPv6: d.uplink.publicIPv6 }) },
    guestBridge: { interface: d.guestBridge.interface, nodeIP: d.guestBridge.nodeIP, ...(d.guestBridge.nodeIPv6 !== undefined && { nodeIPv6: d.guestBridge.nodeIPv6 }), ...(d.guestBridge.mac !== undefined && { mac: d.guestBridge.mac.toLowerCase() }) },
    trunks: [...d.trunks],
    hypervisor: d.hypervisor,
    ...(d.natTag !== undefined && { natTag: d.natTag }),
    ...(d.health?.checks && { healthChecks: d.health.checks.map((c) => ({ ...c })) }),
    ...(d.suspend && { suspend: { reason: d.suspend.reason } }),
    ...(d.statusKey !== undefined && { statusKey: d.statusKey }),
    source,
  };
}

function toGuest(d: Checked<GuestSpec>, source: SourceRef): GuestSpec {
  return {
    name: d.name,
    node: d.node,
    ip: d.ip,
    ...(d.ipv6 !== undefined && { ipv6: d.ipv6 }),
    mac: d.mac.toLowerCase(),
    resources: { memoryMiB: d.resources.memoryMiB, vcpus: d.resources.vcpus },
    ...(d.boot && { boot: { ...d.boot } }),
    ...(d.netns && { netns: { ...d.netns, ...(d.netns.command && { command: [...d.netns.command] }) } }),
    restartOnChange: d.restartOnChange,
    ...(d.migration === 'live' && { migration: 'live' as const }),
    source,
  };
}

function toForward(d: Checked<ForwardSpec>, source: SourceRef): ForwardSpec {
  return {
    name: d.name,
    protocol: d.protocol,
    port: d.port,
    target: { guest: d.target.guest, port: d.target.port },
    ...(d.nodes && { nodes: [...d.nodes].sort(compareStrings) }),
    ...(d.health && { health: { ...d.health } }),
    ...(d.conntrackCleanup !== undefined && { conntrackCleanup: d.conntrackCleanup }),
    source,
  };
}

/**
 * The problem paths of one document, indexed so that asking about one object costs the length of
 * its path, not the number of problems (a hostile file may have hundreds of thousands).
 */
class ProblemIndex {
  private readonly paths = new Set<string>();
  private readonly prefixes = new Set<string>();

  constructor(problemPaths: FieldPath[]) {
    for (const p of problemPaths) {
      this.paths.add(JSON.stringify(p));
      for (let i = 0; i <= p.length; i++) this.prefixes.add(JSON.stringify(p.slice(0, i)));
    }
  }

  /** A problem lies inside the object at `base`, or at one of its parents. */
  touches(base: FieldPath): boolean {
    if (this.paths.size === 0) return false;
    if (this.prefixes.has(JSON.stringify(base))) return true;
    for (let i = 0; i < base.length; i++) if (this.paths.has(JSON.stringify(base.slice(0, i)))) return true;
    return false;
  }
}

function folderOf(file: string): string {
  return file.includes('/') ? `${path.posix.dirname(file)}/` : file;
}

/** At most STATE_LIMITS.diagnostics problems, the rest counted: a hostile file may have millions. */
function capDiagnostics(diagnostics: Diagnostic[]): Diagnostic[] {
  const limit = STATE_LIMITS.diagnostics;
  if (diagnostics.length <= limit) return diagnostics;
  return [...diagnostics.slice(0, limit), moreProblems('.', diagnostics.length - limit)];
}

function moreProblems(file: string, count: number): Diagnostic {
  return wholeFile(file, `${count} more problem(s) not shown (only the first ${STATE_LIMITS.diagnostics} are listed)`);
}
