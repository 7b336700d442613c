// Newline-delimited framing, as the stdio transport does it: whole lines out, a line above the
// limit reported once and skipped up to its end. One function, so that the shared line reader
// of src/protocol/ can replace it in one place.
import type { Readable } from 'node:stream';

export interface LineHandlers {
  line(text: string): void;
  /** A line grew past maxLine bytes; the rest of it is dropped. */
  tooLong(): void;
  /** The input ended (after the last line). */
  end(): void;
}

export function readLines(input: Readable, maxLine: number, on: LineHandlers): void {
  let buf = '';
  let skipping = false;
  input.setEncoding('utf8');
  input.on('data', (chunk: string) => {
    buf += chunk;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (skipping) skipping = false;
      // A whole line can arrive in one chunk: its length is checked here too.
      else if (Buffer.byteLength(line) > maxLine) on.tooLong();
      else if (line.trim() !== '') on.line(line);
      nl = buf.indexOf('\n');
    }
    if (Buffer.byteLength(buf) > maxLine) {
      if (!skipping) on.tooLong();
      skipping = true;
      buf = '';
    }
  });
  input.on('end', () => {
    if (!skipping && buf.trim() !== '') on.line(buf);
    on.end();
  });
}
