// Prints the model as nft text: the batch that `nft -f` loads, and the listing shown in plans.
//
// Rules are stored as libnftables JSON (see model.ts). This printer covers the expressions that
// cgw-sync renders plus the common ones an operator might add by hand; anything else is printed
// as a `# unprintable:` comment, which is fine for display but can never be part of a batch,
// because only rendered (desired) rules are ever loaded and those are all printable.
import type { Json, MapElement, NftChain, NftMap, NftRule, NftTable } from './model.js';

export class UnprintableExpression extends Error {}

type Obj = { [k: string]: Json };

function isObj(v: Json): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Interface names and other free strings are quoted; addresses, numbers and keywords are not. */
const QUOTED_KEYS = new Set(['iifname', 'oifname', 'ibrname', 'obrname']);

function printValue(v: Json, quote = false): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return quote ? JSON.stringify(v) : v;
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
  return String(v);
}

/** The left-hand side of a match, or a key in a map lookup. */
function printOperand(v: Json): string {
  if (!isObj(v)) return printValue(v);
  if (isObj(v.payload)) {
    const p = v.payload;
    if (typeof p.protocol === 'string') return `${p.protocol} ${String(p.field)}`;
    return `@${String(p.base)},${String(p.offset)},${String(p.len)}`;
  }
  if (isObj(v.meta)) {
    const key = String(v.meta.key);
    // Interface keys print without the `meta` prefix, as nft itself does.
    return ['iifname', 'oifname', 'iif', 'oif'].includes(key) ? key : `meta ${key}`;
  }
  if (isObj(v.ct)) {
    const dir = v.ct.dir ? ` ${String(v.ct.dir)}` : '';
    return `ct${dir} ${String(v.ct.key)}`;
  }
  if (isObj(v.fib)) {
    const flags = Array.isArray(v.fib.flags) ? v.fib.flags.join(' . ') : String(v.fib.flags);
    return `fib ${flags} ${String(v.fib.result)}`;
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
  const family = typeof n.family === 'string' ? ` ${n.family}` : '';
  let target = '';
  if (n.addr !== undefined) target = printValue(n.addr as Json);
  if (n.port !== undefined) target += `:${printValue(n.port as Json)}`;
  const flags = Array.isArray(n.flags) ? ` ${n.flags.join(',')}` : typeof n.flags === 'string' ? ` ${n.flags}` : '';
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
      return `${kind} ${String((body as Obj).target)}`;
    case 'counter':
      return isObj(body) ? `counter packets ${String(body.packets)} bytes ${String(body.bytes)}` : 'counter';
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
    case 'log':
      return isObj(body) && body.prefix ? `log prefix ${JSON.stringify(body.prefix)}` : 'log';
    default:
      throw new UnprintableExpression(JSON.stringify(s));
  }
}

/** One rule as nft text (without the `add rule` prefix). */
export function printRule(rule: NftRule): string {
  const text = rule.expr.map(printStatement).join(' ');
  return rule.comment !== undefined ? `${text} comment ${JSON.stringify(rule.comment)}` : text;
}

/** Like printRule, but never throws: for showing live rules that someone else wrote. */
export function describeRule(rule: NftRule): string {
  try {
    return printRule(rule);
  } catch {
    return `# unprintable: ${JSON.stringify(rule.expr)}`;
  }
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
  const dev = b.device !== undefined ? ` device ${JSON.stringify(b.device)}` : '';
  return `type ${b.type} hook ${b.hook}${dev} priority ${b.priority}; policy ${b.policy};`;
}

export function printMapSpec(map: NftMap): string {
  return `type ${map.keyType} : ${map.dataType};`;
}

/** A table as `nft list table` shows it: used for plans and reports. */
export function printTable(t: NftTable): string {
  const lines = [`table ${t.family} ${t.name} {`];
  for (const m of t.maps) {
    lines.push(`\tmap ${m.name} {`, `\t\ttype ${m.keyType} : ${m.dataType}`);
    // One element per line so that a plan diff shows exactly which forwards change.
    if (m.elements.length > 0) {
      lines.push('\t\telements = {');
      for (const e of m.elements) lines.push(`\t\t\t${printElement(e)},`);
      lines.push('\t\t}');
    }
    lines.push('\t}');
  }
  for (const c of t.chains) {
    lines.push(`\tchain ${c.name} {`);
    if (c.base) lines.push(`\t\t${printChainSpec(c)}`);
    for (const r of c.rules) lines.push(`\t\t${describeRule(r)}`);
    lines.push('\t}');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
