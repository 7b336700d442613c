// Newline-delimited framing with a bound: the one line reader of stdio server, relay and client.
// Bytes, not characters, are counted, and a line is cut only at '\n' (never inside a UTF-8 sequence).

export interface LineReaderOptions {
  /** Longest accepted line in bytes (without its newline). */
  maxLine: number;
  onLine: (line: string) => void;
  /** Called once per line longer than maxLine; the rest of that line is dropped. */
  onOversize: () => void;
}

export class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;

  constructor(private readonly opts: LineReaderOptions) {}

  push(chunk: Buffer | string): void {
    let rest = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    for (;;) {
      const nl = rest.indexOf(10);
      const piece = nl < 0 ? rest : rest.subarray(0, nl);
      if (!this.skipping) {
        if (this.size + piece.length > this.opts.maxLine) {
          this.skipping = true;
          this.reset();
          this.opts.onOversize();
        } else if (piece.length > 0) {
          this.parts.push(piece);
          this.size += piece.length;
        }
      }
      if (nl < 0) return;
      if (this.skipping) this.skipping = false;
      else this.flush();
      rest = rest.subarray(nl + 1);
    }
  }

  /** End of input: a last line without its newline still counts. */
  end(): void {
    if (!this.skipping) this.flush();
    this.skipping = false;
  }

  private flush(): void {
    const line = Buffer.concat(this.parts, this.size).toString('utf8');
    this.reset();
    if (line.trim() !== '') this.opts.onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  }

  private reset(): void {
    this.parts = [];
    this.size = 0;
  }
}
