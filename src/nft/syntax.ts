// What the nft text printer may write where. nft strings have no escapes: a quoted string ends at
// the next `"`, an unquoted word ends at the first character outside the lexer's word class, and a
// word that equals a keyword is read as that keyword. So every name or string is checked here,
// independently of the state schema, and anything nft could read as syntax is refused (never
// printed). The sets were worked out from nft 1.0.6's scanner (src/scanner.l) and are checked
// against the real nft by test/security/nft-printer.test.ts.
//
//   identifier  (table, chain, map names, jump targets): the lexer's word `[A-Za-z_.][A-Za-z0-9/_.-]*`,
//               here without a leading '.' or any '/', 1-255 characters, and never a keyword.
//   quoted      (comments, log prefixes): printable ASCII without `"`; nft limits the length.
//   interface   (iifname/oifname/device): quoted, 1-15 characters, and without `*` and `\`: a
//               trailing `*` is nft's interface wildcard, `\*` its escape.
//   word        (unquoted values: addresses, types, hooks, flags, `@map`): letters, digits and
//               _ . : / @ - only, so a value can never end the statement, open a block or a comment,
//               or name a variable.

/** Why a string was refused: `syntax` means nft would read it as something else. */
export type RefusalKind = 'syntax' | 'keyword' | 'policy';

export class NftSyntaxError extends Error {
  constructor(
    readonly what: string,
    readonly value: string,
    readonly kind: RefusalKind,
    reason: string,
  ) {
    super(`refusing to write ${what} ${JSON.stringify(value)} into an nft batch: ${reason}`);
    this.name = 'NftSyntaxError';
  }
}

/** Every keyword of nft 1.0.6's scanner, in any scanner state (which one applies depends on what came before). */
export const NFT_KEYWORDS: ReadonlySet<string> = new Set([
  '8021ad', '8021q', 'a-rwnd', 'abort', 'accept', 'ackseq', 'add', 'addr', 'ah', 'all', 'and', 'arp', 'asconf',
  'asconf-ack', 'auto-merge', 'avgpkt', 'bridge', 'burst', 'bypass', 'bytes', 'cfi', 'cgroup', 'cgroupv2', 'chain',
  'chains', 'checksum', 'chunk', 'classid', 'code', 'comment', 'comp', 'constant', 'continue', 'cookie-ack',
  'cookie-echo', 'count', 'counter', 'counters', 'cpi', 'cpu', 'create', 'csumcov', 'ct', 'cum-tsn-ack', 'cwr',
  'daddr', 'data', 'day', 'dccp', 'define', 'dei', 'delete', 'describe', 'device', 'devices', 'direction', 'dnat',
  'doff', 'dport', 'drop', 'dscp', 'dst', 'dup', 'dynamic', 'echo', 'ecn', 'ecne', 'element', 'elements', 'eol',
  'eq', 'error', 'esp', 'ether', 'event', 'exists', 'expectation', 'expiration', 'expires', 'export', 'exthdr',
  'fanout', 'fastopen', 'fib', 'flags', 'flow', 'flowlabel', 'flowtable', 'flowtables', 'flush', 'forward-tsn',
  'frag', 'frag-off', 'fully-random', 'fwd', 'gateway', 'gc-interval', 'ge', 'get', 'goto', 'group', 'gt', 'handle',
  'hbh', 'hdrlength', 'heartbeat', 'heartbeat-ack', 'helper', 'helpers', 'hlen', 'hook', 'hooks', 'hoplimit', 'hour',
  'htype', 'ibriport', 'ibrname', 'icmp', 'icmpv6', 'icmpx', 'id', 'igmp', 'iif', 'iifgroup', 'iifname', 'iiftype',
  'import', 'in', 'inc', 'include', 'index', 'inet', 'init', 'init-ack', 'init-tag', 'initial-tsn', 'insert',
  'interval', 'ip', 'ip6', 'ipsec', 'jhash', 'json', 'jump', 'l3proto', 'label', 'last-entry', 'le', 'left',
  'length', 'level', 'limit', 'limits', 'list', 'll', 'log', 'lowest-tsn', 'lshift', 'lsrr', 'lt', 'map', 'maps',
  'mark', 'masquerade', 'max-delay', 'maxseg', 'md5sig', 'memory', 'meta', 'meter', 'meters', 'mh', 'minute',
  'missing', 'mod', 'monitor', 'more-fragments', 'mptcp', 'mrt', 'mss', 'mtu', 'name', 'ne', 'netdev', 'new-cum-tsn',
  'nexthdr', 'nexthop', 'nftrace', 'nh', 'noop', 'nop', 'not', 'notrack', 'num', 'num-dup-tsns',
  'num-gap-ack-blocks', 'num-inbound-streams', 'num-outbound-streams', 'numgen', 'obriport', 'obrname', 'offload',
  'offset', 'oif', 'oifgroup', 'oifname', 'oiftype', 'operation', 'option', 'options', 'or', 'original', 'osf',
  'out', 'over', 'packets', 'param-problem', 'pcp', 'performance', 'persistent', 'pkttype', 'plen', 'policy', 'port',
  'position', 'ppid', 'prefix', 'priority', 'proto-dst', 'proto-src', 'protocol', 'ptr', 'ptype', 'queue',
  'queue-threshold', 'quota', 'quotas', 'ra', 'random', 'rate', 'redefine', 'redirect', 'reject', 'rename',
  'replace', 'reply', 'reqid', 'reserved', 'reserved2', 'reset', 'return', 'right', 'rr', 'rshift', 'rt', 'rt0',
  'rt2', 'rtclassid', 'rule', 'rules', 'ruleset', 'sack', 'sack-perm', 'sack-permitted', 'sack0', 'sack1', 'sack2',
  'sack3', 'saddr', 'sctp', 'secmark', 'secmarks', 'second', 'seed', 'seg-left', 'seqno', 'sequence', 'set', 'sets',
  'shutdown', 'shutdown-ack', 'shutdown-complete', 'sid', 'size', 'skgid', 'skuid', 'snaplen', 'snat', 'socket',
  'spi', 'spnum', 'sport', 'srh', 'ssn', 'ssrr', 'state', 'status', 'stream', 'subtype', 'symhash', 'synproxy',
  'synproxys', 'table', 'tables', 'tag', 'tcp', 'th', 'time', 'timeout', 'timestamp', 'to', 'tproxy', 'trace',
  'transparent', 'tsecr', 'tsn', 'tsval', 'ttl', 'type', 'typeof', 'udp', 'udplite', 'undefine', 'until', 'update',
  'urgptr', 'used', 'value', 'version', 'vlan', 'vm', 'vmap', 'vtag', 'week', 'wildcard', 'window', 'with', 'wscale',
  'xml', 'xor', 'xt', 'zone',
]);

/** nft's limits (NFT_NAME_MAXLEN - 1, NFTNL_UDATA_COMMENT_MAXLEN, NF_LOG_PREFIXLEN - 1, IFNAMSIZ - 1). */
export const MAX_IDENTIFIER = 255;
export const MAX_COMMENT = 128;
export const MAX_LOG_PREFIX = 127;
export const MAX_INTERFACE = 15;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const LEXER_WORD = /^[A-Za-z_.][A-Za-z0-9/_.-]*$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const WORD = /^[A-Za-z0-9_.:/@-]+$/;

/** A name nft reads back as exactly this name, or why not. */
export function identifierProblem(s: string): { kind: RefusalKind; reason: string } | undefined {
  if (s.length === 0) return { kind: 'syntax', reason: 'empty' };
  if (s.length > MAX_IDENTIFIER) return { kind: 'syntax', reason: `longer than ${MAX_IDENTIFIER} characters` };
  if (!LEXER_WORD.test(s)) return { kind: 'syntax', reason: 'only letters, digits, _ . - are allowed, starting with a letter or _' };
  if (!IDENTIFIER.test(s)) return { kind: 'policy', reason: "must start with a letter or _ and contain no '/'" };
  if (NFT_KEYWORDS.has(s)) return { kind: 'keyword', reason: 'it is an nft keyword' };
  return undefined;
}

function quotedProblem(s: string, max: number): { kind: RefusalKind; reason: string } | undefined {
  if (s.includes('"')) return { kind: 'syntax', reason: 'a double quote would end the string (nft strings have no escapes)' };
  if (!PRINTABLE_ASCII.test(s)) return { kind: 'policy', reason: 'only printable ASCII is allowed (no control characters, no newline)' };
  if (s.length > max) return { kind: 'syntax', reason: `longer than nft's limit of ${max} characters` };
  return undefined;
}

export function interfaceProblem(s: string): { kind: RefusalKind; reason: string } | undefined {
  if (s.length === 0) return { kind: 'syntax', reason: 'empty' };
  const q = quotedProblem(s, 16);
  if (q) return q;
  if (s.endsWith('*')) return { kind: 'syntax', reason: "a trailing '*' makes it an nft interface wildcard" };
  if (/[*\\]/.test(s)) return { kind: 'policy', reason: "'*' and '\\' (nft's interface wildcard and its escape) are not allowed" };
  if (s.length > MAX_INTERFACE) return { kind: 'policy', reason: `longer than an interface name (${MAX_INTERFACE} characters)` };
  return undefined;
}

function checked(what: string, s: string, problem: { kind: RefusalKind; reason: string } | undefined): string {
  if (problem) throw new NftSyntaxError(what, s, problem.kind, problem.reason);
  return s;
}

/** A table, chain or map name, or a jump target, as an unquoted nft identifier. */
export function identifier(what: string, s: string): string {
  return checked(what, s, identifierProblem(s));
}

/** A rule comment, quoted. */
export function comment(s: string): string {
  return `"${checked('comment', s, quotedProblem(s, MAX_COMMENT))}"`;
}

/** A log prefix, quoted. */
export function logPrefix(s: string): string {
  return `"${checked('log prefix', s, quotedProblem(s, MAX_LOG_PREFIX))}"`;
}

/** An interface name (iifname, oifname, chain device), quoted. */
export function interfaceName(s: string): string {
  return `"${checked('interface name', s, interfaceProblem(s))}"`;
}

/** An unquoted value or keyword (address, port, type, hook, flag, `@map`): one token-ish run without structure characters. */
export function word(what: string, s: string): string {
  return checked(what, s, WORD.test(s) ? undefined : { kind: 'syntax', reason: 'not a single nft word (letters, digits and _ . : / @ - only)' });
}

/** Several words separated by single blanks (e.g. the payload field `saddr ip`). */
export function words(what: string, s: string): string {
  for (const w of s.split(' ')) word(what, w);
  return s;
}

/** A name shown to a person (plans, reports): printed as is when nft would print it so, else JSON-quoted. */
export function displayName(s: string): string {
  return identifierProblem(s) === undefined ? s : JSON.stringify(s);
}
