// Distinguished names, compared by meaning rather than spelling (a leaf: no agent imports).
// One canonical form for what the config says (RFC 4514/2253 strings, OpenSSL's `/C=US/CN=x`
// and `C = US, CN = x` outputs) and for what a client certificate carries (the DER of its
// subject): a list of RDNs, each a list of attribute-value assertions keyed by OID with the
// value folded as X.520's caseIgnoreMatch does (case, repeated and surrounding spaces, NFKC).
import { DnSyntaxError, berString, derChildren, derSubject } from './der.js';

export { DnSyntaxError };

export interface Ava {
  /** Dotted OID of the attribute type. */
  oid: string;
  /** The value as written in the certificate (or '#hex' of its BER when it is not a string). */
  value: string;
  /** What is compared: the folded string, or the lower-case '#hex' (marked, so no string equals it). */
  key: string;
  binary: boolean;
}

/** RDNs in the certificate's own order (X.500: most significant, e.g. C, first). */
export type Dn = Ava[][];

// Short names, as OpenSSL and RFC 4514 spell them; compared case-insensitively.
const NAMES: Array<[string, string[]]> = [
  ['2.5.4.3', ['CN', 'commonName']],
  ['2.5.4.4', ['SN', 'surname']],
  ['2.5.4.5', ['serialNumber']],
  ['2.5.4.6', ['C', 'countryName']],
  ['2.5.4.7', ['L', 'localityName']],
  ['2.5.4.8', ['ST', 'S', 'stateOrProvinceName']],
  ['2.5.4.9', ['STREET', 'streetAddress']],
  ['2.5.4.10', ['O', 'organizationName']],
  ['2.5.4.11', ['OU', 'organizationalUnitName']],
  ['2.5.4.12', ['title', 'T']],
  ['2.5.4.15', ['businessCategory']],
  ['2.5.4.17', ['postalCode']],
  ['2.5.4.42', ['GN', 'givenName']],
  ['2.5.4.43', ['initials']],
  ['2.5.4.44', ['generationQualifier']],
  ['2.5.4.46', ['dnQualifier']],
  ['2.5.4.65', ['pseudonym']],
  ['0.9.2342.19200300.100.1.1', ['UID', 'userId']],
  ['0.9.2342.19200300.100.1.25', ['DC', 'domainComponent']],
  ['1.2.840.113549.1.9.1', ['emailAddress', 'E', 'email']],
];
const OID_OF = new Map(NAMES.flatMap(([oid, names]) => names.map((n) => [n.toLowerCase(), oid] as const)));
const NAME_OF = new Map(NAMES.map(([oid, names]) => [oid, names[0]!]));

const fold = (s: string) => s.normalize('NFKC').replace(/\s+/g, ' ').trim().toLowerCase();

function ava(oid: string, value: string | Buffer): Ava {
  if (typeof value === 'string') return { oid, value, key: fold(value), binary: false };
  const text = berString(value);
  if (text !== null) return { oid, value: text, key: fold(text), binary: false };
  const hex = `#${value.toString('hex')}`;
  return { oid, value: hex, key: `\0${hex}`, binary: true };
}

function typeOid(raw: string): string {
  const t = raw.trim();
  const oid = /^(?:oid\.)?(\d+(?:\.\d+)+)$/i.exec(t)?.[1];
  if (oid) return oid;
  if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(t)) throw new DnSyntaxError(`'${t}' is not an attribute type`);
  const known = OID_OF.get(t.toLowerCase());
  if (!known) throw new DnSyntaxError(`unknown attribute type '${t}' (write it as a dotted OID)`);
  return known;
}

const SPECIAL = ' "#+,;<=>\\/';

/**
 * Parses a DN as people write it: RFC 4514 (`CN=viewer,O=ops,C=US`, most specific first), the
 * same with ';' or spaces around separators (RFC 2253 §4, OpenSSL's default output), or
 * OpenSSL's `/C=US/O=ops/CN=viewer` (`-subj`, most significant first). '+' joins the values of
 * a multi-valued RDN; `\,`-style and `\2c`-style escapes, `"quoted"` values and `#hex` BER
 * values are understood. Returns the RDNs in X.500 order (as the certificate holds them).
 */
export function parseDn(text: string): Dn {
  const slash = text.trimStart().startsWith('/');
  const s = slash ? text.trimStart().slice(1) : text;
  const seps = slash ? '/' : ',;';
  if (s.trim() === '') throw new DnSyntaxError('empty distinguished name');
  const rdns: Dn = [];
  let rdn: Ava[] = [];
  let i = 0;
  const at = () => s[i];
  const spaces = () => {
    while (at() === ' ') i++;
  };
  for (;;) {
    spaces();
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new DnSyntaxError(`missing '=' after '${s.slice(i, i + 40)}'`);
    const oid = typeOid(s.slice(i, eq));
    i = eq + 1;
    spaces();
    let value: string | Buffer;
    if (at() === '#') {
      const m = /^#([0-9a-fA-F]*)/.exec(s.slice(i))!;
      if (m[1]!.length === 0 || m[1]!.length % 2) throw new DnSyntaxError(`bad hex value for ${NAME_OF.get(oid) ?? oid}`);
      value = Buffer.from(m[1]!, 'hex');
      if (derChildren(value, 0, value.length).length !== 1)
        throw new DnSyntaxError(`the hex value for ${NAME_OF.get(oid) ?? oid} is not one BER element`);
      i += m[0].length;
      spaces();
    } else {
      const bytes: number[] = [];
      let keep = 0; // bytes up to here are not trailing unescaped spaces
      const quoted = at() === '"';
      if (quoted) i++;
      for (;;) {
        const c = at();
        if (c === undefined) {
          if (quoted) throw new DnSyntaxError('unterminated quoted value');
          break;
        }
        if (quoted && c === '"') {
          i++;
          keep = bytes.length;
          spaces();
          break;
        }
        if (!quoted && (seps.includes(c) || c === '+')) break;
        if (c === '\\') {
          const hex = /^[0-9a-fA-F]{2}/.exec(s.slice(i + 1, i + 3))?.[0];
          if (hex) {
            bytes.push(parseInt(hex, 16));
            i += 3;
          } else if (s[i + 1] !== undefined && SPECIAL.includes(s[i + 1]!)) {
            bytes.push(s.charCodeAt(i + 1));
            i += 2;
          } else throw new DnSyntaxError(`bad escape '\\${s[i + 1] ?? ''}'`);
          keep = bytes.length;
          continue;
        }
        if (!quoted && (c === '"' || c === '<' || c === '>' || c === '\0')) throw new DnSyntaxError(`'${c}' must be escaped`);
        bytes.push(...Buffer.from(c, 'utf8'));
        i += c.length;
        if (c !== ' ') keep = bytes.length;
      }
      try {
        value = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes.slice(0, keep)));
      } catch {
        throw new DnSyntaxError(`the value for ${NAME_OF.get(oid) ?? oid} is not UTF-8`);
      }
      if (value === '') throw new DnSyntaxError(`empty value for ${NAME_OF.get(oid) ?? oid}`);
    }
    rdn.push(ava(oid, value));
    const c = at();
    if (c === '+') {
      i++;
      continue;
    }
    rdns.push(rdn);
    rdn = [];
    if (c === undefined) break;
    if (!seps.includes(c)) throw new DnSyntaxError(`unexpected '${c}'`);
    i++;
    if (s.slice(i).trim() === '') throw new DnSyntaxError('trailing separator');
  }
  // RFC 4514 writes the last RDN first; the slash form writes them in X.500 order.
  return slash ? rdns : rdns.reverse();
}

/** The subject DN of a certificate (DER), in its own order; [] for an empty subject. */
export function certificateSubject(der: Buffer): Dn {
  return derSubject(der).map((set) => set.map(({ oid, value }) => ava(oid, value)));
}

function escapeValue(a: Ava): string {
  if (a.binary) return a.value;
  return a.value
    .replace(/[\\"+,;<>=]/g, (c) => `\\${c}`)
    .replace(/\0/g, '\\00')
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

/** RFC 4514 string (most specific RDN first), the form principals are named and logged in. */
export function formatDn(dn: Dn): string {
  return [...dn]
    .reverse()
    .map((rdn) => rdn.map((a) => `${NAME_OF.get(a.oid) ?? a.oid}=${escapeValue(a)}`).join('+'))
    .join(',');
}

/**
 * Whether every attribute of `pattern` is in `subject` (same type, same folded value), whatever
 * the order of RDNs or of values inside one. A full DN therefore matches itself written in
 * either order, and a partial DN (`CN=viewer`) matches every subject that has that attribute.
 */
export function dnCovers(pattern: Dn, subject: Dn): boolean {
  const have = new Set(subject.flat().map((a) => `${a.oid}=${a.key}`));
  return pattern.flat().every((a) => have.has(`${a.oid}=${a.key}`));
}
