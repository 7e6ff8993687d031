// Preloaded into a measured process (`node --import <this file> ...`): at exit it writes the
// process's peak resident set size (process.resourceUsage().maxRSS, KiB) to the file named by
// CGW_BENCH_MAXRSS_FILE, so the benchmark sees the child's own peak and not its parent's.
import { writeFileSync } from 'node:fs';

const out = process.env.CGW_BENCH_MAXRSS_FILE;
if (out) {
  process.on('exit', () => {
    writeFileSync(out, `${process.resourceUsage().maxRSS}\n`);
  });
}
