// Just enough DER to read a certificate's subject Name and BER string values (a leaf).
export class DnSyntaxError extends Error {}

interface Tlv {
  tag: number;
  /** Offsets in the buffer: the element's first byte, its content, and the byte after it. */
  start: number;
  content: number;
  end: number;
}

function tlv(buf: Buffer, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new DnSyntaxError('truncated DER');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DnSyntaxError('multi-byte DER tags are not supported');
  let len = buf[pos + 1]!;
  let content = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || content + n > limit) throw new DnSyntaxError('bad DER length');
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf[content + k]!;
    content += n;
  }
  if (content + len > limit) throw new DnSyntaxError('truncated DER');
  return { tag, start: pos, content, end: content + len };
}

/** The elements between `from` and `to` (one level). */
export function derChildren(buf: Buffer, from: number, to: number): Tlv[] {
  const out: Tlv[] = [];
  for (let p = from; p < to;) {
    const e = tlv(buf, p, to);
    out.push(e);
    p = e.end;
  }
  return out;
}

function oidText(b: Buffer): string {
  if (b.length === 0) throw new DnSyntaxError('empty OID');
  const parts: number[] = [];
  let v = 0;
  for (const byte of b) {
    v = v * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift()!;
  const a = first < 40 ? 0 : first < 80 ? 1 : 2;
  return [a, first - 40 * a, ...parts].join('.');
}

/** The text of a BER string element (UTF8String, PrintableString, …), or null for any other type. */
export function berString(el: Buffer): string | null {
  let e: Tlv;
  try {
    e = tlv(el, 0, el.length);
  } catch {
    return null;
  }
  if (e.end !== el.length) return null;
  const body = el.subarray(e.content, e.end);
  switch (e.tag) {
    case 0x0c: // UTF8String
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(body);
      } catch {
        return null;
      }
    case 0x12: // NumericString
    case 0x13: // PrintableString
    case 0x14: // TeletexString (read as Latin-1, as OpenSSL does)
    case 0x16: // IA5String
    case 0x1a: // VisibleString
      return body.toString('latin1');
    case 0x1e: // BMPString (UCS-2 big-endian)
      return Buffer.from(body).swap16().toString('utf16le');
    case 0x1c: // UniversalString (UCS-4 big-endian)
      if (body.length % 4) return null;
      return String.fromCodePoint(...Array.from({ length: body.length / 4 }, (_, k) => body.readUInt32BE(4 * k)));
    default:
      return null;
  }
}

/** The subject of a DER certificate: its RDNs (SETs) in order, each AVA's OID and value element. */
export function derSubject(cert: Buffer): Array<Array<{ oid: string; value: Buffer }>> {
  const outer = tlv(cert, 0, cert.length);
  const tbs = derChildren(cert, outer.content, outer.end)[0];
  if (outer.tag !== 0x30 || tbs?.tag !== 0x30) throw new DnSyntaxError('not a certificate');
  const fields = derChildren(cert, tbs.content, tbs.end);
  // [0] version (optional), serialNumber, signature, issuer, validity, subject
  const subject = fields[fields[0]?.tag === 0xa0 ? 5 : 4];
  if (subject?.tag !== 0x30) throw new DnSyntaxError('certificate without a subject');
  return derChildren(cert, subject.content, subject.end).map((set) => {
    if (set.tag !== 0x31) throw new DnSyntaxError('an RDN is not a SET');
    return derChildren(cert, set.content, set.end).map((seq) => {
      const [type, value] = derChildren(cert, seq.content, seq.end);
      if (seq.tag !== 0x30 || type?.tag !== 0x06 || !value) throw new DnSyntaxError('bad attribute in a Name');
      return { oid: oidText(cert.subarray(type.content, type.end)), value: cert.subarray(value.start, value.end) };
    });
  });
}
