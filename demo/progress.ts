// A one-line progress bar for terminals, plain lines otherwise.
export function progressLine(label: string, cur: number, end: number, rate: number | null): string {
  const pct = end > 0 ? Math.min(100, (cur / end) * 100) : 0;
  const width = 30;
  const filled = Math.round((pct / 100) * width);
  const mib = (n: number) => (n / 1048576).toFixed(0);
  const rateText = rate === null ? '' : ` ${(rate / 1048576).toFixed(1)} MiB/s`;
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct.toFixed(0).padStart(3)}% ${mib(cur)}/${mib(end)} MiB${rateText}`;
}

export function draw(line: string): void {
  if (process.stdout.isTTY) process.stdout.write(`\r${line}\x1b[K`);
  else console.log(line);
}
