// The forwards' indexes decide when the checks over forwards may skip their loops: they must say
// "clean" exactly when the plain loops would find nothing. Random small states (few names, ports
// and nodes, so that clashes are common) split into random lists are judged both ways: by the
// indexes and by brute force over the joined forwards; validateSemantics with and without the
// lists (and with the lists' kept indexes) gives the same diagnostics.
import { describe, expect, it } from 'vitest';
import { forwardIndex, namesMayRepeat, portKey, portsMayClash, referencesKnown } from '../src/state/forward-index.js';
import { validateSemantics, type SemanticInput } from '../src/state/semantic.js';
import type { ForwardSpec, GuestSpec, NodeSpec } from '../src/state/types.js';
import { syntheticGuest, syntheticNode, syntheticState } from '../src/bench/synthetic.js';
import { seededRandom } from './helpers/random.js';

type Pick = (n: number) => number;

/** A random forward from small pools: names, ports, protocols, targets and `nodes` repeat often. */
function randomForward(pick: Pick, line: number): ForwardSpec {
  const nodes = pick(3) === 0 ? Array.from({ length: pick(3) }, () => `node${1 + pick(4)}`).sort() : undefined;
  return {
    name: `f${pick(40)}`,
    protocol: pick(2) === 0 ? 'tcp' : 'udp',
    port: 1000 + pick(12),
    target: { guest: `guest${1 + pick(3)}`, port: 1 + pick(50) },
    ...(nodes && { nodes }),
    source: { file: `forwards/f${line % 3}.yaml`, line, column: 3 },
  };
}

/** `forwards` cut into 1 to 4 lists at random places (some may be empty). */
function split(pick: Pick, forwards: ForwardSpec[]): ForwardSpec[][] {
  const cuts = Array.from({ length: pick(4) }, () => pick(forwards.length + 1)).sort((a, b) => a - b);
  return [0, ...cuts].map((from, i) => forwards.slice(from, [...cuts, forwards.length][i]));
}

/** Brute force, as the plain loops see it: every (node, port key) a forward enters. */
function clashes(forwards: ForwardSpec[], nodes: string[]): boolean {
  const seen = new Set<string>();
  for (const f of forwards) {
    for (const n of f.nodes ?? nodes) {
      const key = `${n} ${portKey(f)}`;
      if (seen.has(key)) return true;
      seen.add(key);
    }
  }
  return false;
}

function randomInput(pick: Pick): { input: SemanticInput; lists: ForwardSpec[][] } {
  // node1..node(0-3); node4 never exists; guest1..guest(1-2), guest3 never exists.
  const nodes: NodeSpec[] = Array.from({ length: pick(4) }, (_, i) => syntheticNode(i + 1));
  const guests: GuestSpec[] = Array.from({ length: 1 + pick(2) }, (_, i) => syntheticGuest(i + 1, 'node1'));
  const forwards = Array.from({ length: pick(12) }, (_, i) => randomForward(pick, i + 1));
  const { cluster } = syntheticState(0);
  return { input: { cluster, nodes, guests, forwards }, lists: split(pick, forwards) };
}

describe('the forwards indexes say "clean" exactly when the plain loops find nothing', () => {
  it('2,000 random states in random lists', () => {
    const pick = seededRandom(8);
    const seen = { names: 0, ports: 0, references: 0 };
    for (let round = 0; round < 2_000; round++) {
      const { input, lists } = randomInput(pick);
      const label = `round ${round}`;
      const indexes = lists.map((l) => forwardIndex(l, false));
      const names = input.forwards.map((f) => f.name);
      const nodeNames = input.nodes.map((n) => n.name);
      const repeats = new Set(names).size !== names.length;
      expect(namesMayRepeat(indexes), label).toBe(repeats);
      const clash = clashes(input.forwards, nodeNames);
      expect(portsMayClash(indexes, new Set(nodeNames)), label).toBe(clash);
      const guestSet = new Set(input.guests.map((g) => g.name));
      const known = input.forwards.every((f) => guestSet.has(f.target.guest) && (f.nodes ?? []).every((n) => nodeNames.includes(n)));
      expect(referencesKnown(indexes, guestSet, new Set(nodeNames)), label).toBe(known);
      seen.names += repeats ? 1 : 0;
      seen.ports += clash ? 1 : 0;
      seen.references += known ? 0 : 1;
      // The checks: the same diagnostics with the lists (kept indexes, asked twice) as without.
      const plain = validateSemantics(input);
      const withLists = { ...input, forwardLists: lists };
      expect(validateSemantics(withLists), label).toEqual(plain);
      expect(validateSemantics(withLists), label).toEqual(plain);
    }
    // Both answers were met often, or the comparison proves little.
    for (const count of Object.values(seen)) {
      expect(count).toBeGreaterThan(200);
      expect(count).toBeLessThan(1_800);
    }
  });
});
