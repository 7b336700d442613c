// qcow2 headers built byte by byte, as QEMU writes them: for tests that need a real image
// header without qemu-img.

export interface HeaderSpec {
  version?: 2 | 3;
  backing?: string;
  backingFormat?: string;
  dataFile?: string;
  needsDataFile?: boolean;
  encrypted?: boolean;
}

/** A qcow2 header as QEMU writes one: the fixed header, extensions, then the backing name. */
export function qcow2(h: HeaderSpec = {}): Buffer {
  const version = h.version ?? 3;
  const headerLength = version === 3 ? 104 : 72;
  const b = Buffer.alloc(4096);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(version, 4);
  b.writeUInt32BE(16, 20); // cluster_bits
  b.writeBigUInt64BE(32n << 20n, 24); // size
  b.writeUInt32BE(h.encrypted ? 2 : 0, 32);
  if (version === 3) {
    b.writeBigUInt64BE(h.needsDataFile || h.dataFile ? 4n : 0n, 72);
    b.writeUInt32BE(4, 96); // refcount_order
    b.writeUInt32BE(headerLength, 100);
  }
  let off = headerLength;
  const ext = (type: number, s: string) => {
    const data = Buffer.from(s);
    b.writeUInt32BE(type, off);
    b.writeUInt32BE(data.length, off + 4);
    data.copy(b, off + 8);
    off += 8 + Math.ceil(data.length / 8) * 8;
  };
  if (h.backingFormat !== undefined) ext(0xe2792aca, h.backingFormat);
  if (h.dataFile !== undefined) ext(0x44415441, h.dataFile);
  off += 8; // end of extensions
  if (h.backing !== undefined) {
    const name = Buffer.from(h.backing);
    b.writeBigUInt64BE(BigInt(off), 8);
    b.writeUInt32BE(name.length, 16);
    name.copy(b, off);
  }
  return b;
}
