// Prints the model as nft text: the batch that `nft -f` loads, and the listing shown in plans.
//
// Rules are stored as libnftables JSON (see model.ts). This printer covers the expressions that
// cgw-sync renders plus the common ones an operator might add by hand; anything else is printed
// as a `# unprintable:` comment, which is fine for display but can never be part of a batch,
// because only rendered (desired) rules are ever loaded and those are all printable.
//
// Every name and string goes through syntax.ts, which refuses (NftSyntaxError) whatever nft
// would read as syntax: the printer does not rely on the state schema to keep values harmless.
import type { Json, MapElement, NftChain, NftMap, NftRule, NftTable } from './model.js';
import { comment, displayName, identifier, interfaceName, logPrefix, word, words } from './syntax.js';

export class UnprintableExpression extends Error {}

const MATCH_OPS = new Set(['==', '!=', '<', '>', '<=', '>=', 'in']);

/** Display form that never throws: live objects someone else wrote may hold anything. */
function describe(print: () => string, raw: unknown): string {
  try {
    return print();
  } catch {
    return `# unprintable: ${JSON.stringify(raw)}`;
  }
}

type Obj = { [k: string]: Json };

function isObj(v: Json): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Interface names are quoted; addresses, numbers and keywords are not. */
const QUOTED_KEYS = new Set(['iifname', 'oifname', 'ibrname', 'obrname']);

function printNumber(v: Json): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new UnprintableExpression(`not a number: ${JSON.stringify(v)}`);
  return String(v);
}

function printValue(v: Json, quote = false): string {
  if (typeof v === 'number') return printNumber(v);
  if (typeof v === 'string') return quote ? interfaceName(v) : word('value', v);
  if (Array.isArray(v)) return v.map((x) => printValue(x, quote)).join(', ');
  if (isObj(v)) {
    if ('prefix' in v && isObj(v.prefix)) return `${printValue(v.prefix.addr as Json)}/${printValue(v.prefix.len as Json)}`;
    if ('range' in v && Array.isArray(v.range)) return `${printValue(v.range[0])}-${printValue(v.range[1])}`;
    if ('concat' in v && Array.isArray(v.concat)) return v.concat.map((x) => printValue(x, quote)).join(' . ');
    if ('set' in v) {
      const items = Array.isArray(v.set) ? v.set : [v.set];
      return `{ ${items.map((x) => printValue(x, quote)).join(', ')} }`;
    }
    if ('elem' in v && isObj(v.elem)) return printValue(v.elem.val as Json, quote);
    return printOperand(v);
  }
  if (v === null) return '';
  return word('value', String(v));
}

/** The left-hand side of a match, or a key in a map lookup. */
function printOperand(v: Json): string {
  if (!isObj(v)) return printValue(v);
  if (isObj(v.payload)) {
    const p = v.payload;
    if (typeof p.protocol === 'string') return `${word('protocol', p.protocol)} ${words('payload field', String(p.field))}`;
    return `@${word('payload base', String(p.base))},${printNumber(p.offset as Json)},${printNumber(p.len as Json)}`;
  }
  if (isObj(v.meta)) {
    const key = word('meta key', String(v.meta.key));
    // Interface keys print without the `meta` prefix, as nft itself does.
    return ['iifname', 'oifname', 'iif', 'oif'].includes(key) ? key : `meta ${key}`;
  }
  if (isObj(v.ct)) {
    const dir = v.ct.dir ? ` ${word('ct direction', String(v.ct.dir))}` : '';
    // Keys like `ip daddr` (with a direction) are two words.
    return `ct${dir} ${words('ct key', String(v.ct.key))}`;
  }
  if (isObj(v.fib)) {
    const flags = (Array.isArray(v.fib.flags) ? v.fib.flags : [v.fib.flags]).map((f) => word('fib flag', String(f))).join(' . ');
    return `fib ${flags} ${word('fib result', String(v.fib.result))}`;
  }
  if (isObj(v.map)) return `${printOperand(v.map.key as Json)} map ${printValue(v.map.data as Json)}`;
  if ('concat' in v && Array.isArray(v.concat)) return v.concat.map(printOperand).join(' . ');
  if (isObj(v['&']) || Array.isArray(v['&'])) {
    const [a, b] = v['&'] as Json[];
    return `${printOperand(a as Json)} & ${printValue(b as Json)}`;
  }
  throw new UnprintableExpression(JSON.stringify(v));
}

function operandKey(v: Json): string | undefined {
  if (isObj(v) && isObj(v.meta)) return String(v.meta.key);
  return undefined;
}

function printNat(kind: string, n: Obj): string {
  const family = typeof n.family === 'string' ? ` ${word('nat family', n.family)}` : '';
  let target = '';
  if (n.addr !== undefined) target = printValue(n.addr as Json);
  if (n.port !== undefined) target += `:${printValue(n.port as Json)}`;
  const flagList = Array.isArray(n.flags) ? n.flags : typeof n.flags === 'string' ? [n.flags] : [];
  const flags = flagList.length ? ` ${flagList.map((f) => word('nat flag', String(f))).join(',')}` : '';
  return target ? `${kind}${family} to ${target}${flags}` : `${kind}${flags}`;
}

function printStatement(s: Json): string {
  if (!isObj(s)) throw new UnprintableExpression(JSON.stringify(s));
  const [kind] = Object.keys(s);
  const body = s[kind as string] as Json;
  switch (kind) {
    case 'match': {
      const m = body as Obj;
      const left = printOperand(m.left as Json);
      const quote = QUOTED_KEYS.has(operandKey(m.left as Json) ?? '');
      const right = printValue(m.right as Json, quote);
      const op = String(m.op);
      if (!MATCH_OPS.has(op)) throw new UnprintableExpression(`unknown match operator ${JSON.stringify(op)}`);
      // "in" is the implicit flag test (`ct status dnat`) and set membership; "==" is implicit too.
      if (op === '==' || op === 'in') return `${left} ${right}`;
      return `${left} ${op} ${right}`;
    }
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
      return kind;
    case 'jump':
    case 'goto':
      return `${kind} ${identifier('jump target', String((body as Obj).target))}`;
    case 'counter':
      return isObj(body) ? `counter packets ${printNumber(body.packets as Json)} bytes ${printNumber(body.bytes as Json)}` : 'counter';
    case 'notrack':
      return 'notrack';
    case 'snat':
    case 'dnat':
      return printNat(kind, body as Obj);
    case 'masquerade':
    case 'redirect':
      return printNat(kind, (body ?? {}) as Obj);
    case 'mangle': {
      const m = body as Obj;
      return `${printOperand(m.key as Json)} set ${printValue(m.value as Json)}`;
    }
    case 'dup': {
      // `dup to <addr> device "<dev>"`: a copy to a next hop (ct-sync's early replies).
      const d = body as Obj;
      return `dup to ${printValue(d.addr as Json)}${d.dev !== undefined ? ` device ${printValue(d.dev as Json, true)}` : ''}`;
    }
    case 'log':
      return isObj(body) && body.prefix ? `log prefix ${logPrefix(String(body.prefix))}` : 'log';
    default:
      throw new UnprintableExpression(JSON.stringify(s));
  }
}

/** One rule as nft text (without the `add rule` prefix). */
export function printRule(rule: NftRule): string {
  const text = rule.expr.map(printStatement).join(' ');
  return rule.comment !== undefined ? `${text} comment ${comment(rule.comment)}` : text;
}

/** Like printRule, but never throws: for showing live rules that someone else wrote. */
export function describeRule(rule: NftRule): string {
  return describe(() => printRule(rule), rule.expr);
}

/** Keys alone address an element for deletion. */
export function printElementKey(e: MapElement): string {
  return printValue(e.key);
}

export function printElement(e: MapElement): string {
  return `${printValue(e.key)} : ${printValue(e.value)}`;
}

export function printChainSpec(chain: NftChain): string {
  const b = chain.base;
  if (!b) return '';
  const dev = b.device !== undefined ? ` device ${interfaceName(b.device)}` : '';
  return `type ${word('chain type', b.type)} hook ${word('hook', b.hook)}${dev} priority ${printNumber(b.priority)}; policy ${word('policy', b.policy)};`;
}

/** A map or set type: `ipv4_addr` or a concatenation `ipv4_addr . inet_service`. */
function printType(t: string): string {
  return t
    .split(' . ')
    .map((x) => word('type', x))
    .join(' . ');
}

export function printMapSpec(map: NftMap): string {
  return `type ${printType(map.keyType)} : ${printType(map.dataType)};`;
}

/** A table as `nft list table` shows it: used for plans and reports. */
export function printTable(t: NftTable): string {
  const lines = [`table ${t.family} ${displayName(t.name)} {`];
  for (const m of t.maps) {
    lines.push(`\tmap ${displayName(m.name)} {`, `\t\t${describe(() => printMapSpec(m).slice(0, -1), [m.keyType, m.dataType])}`);
    // One element per line so that a plan diff shows exactly which forwards change.
    if (m.elements.length > 0) {
      lines.push('\t\telements = {');
      for (const e of m.elements) lines.push(`\t\t\t${describe(() => printElement(e), e)},`);
      lines.push('\t\t}');
    }
    lines.push('\t}');
  }
  for (const c of t.chains) {
    lines.push(`\tchain ${displayName(c.name)} {`);
    if (c.base) lines.push(`\t\t${describe(() => printChainSpec(c), c.base)}`);
    for (const r of c.rules) lines.push(`\t\t${describeRule(r)}`);
    lines.push('\t}');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
