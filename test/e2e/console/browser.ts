/**
 * The browser for the console tests: headless Chromium driven by playwright-core. Found from
 * WAFLEET_CHROMIUM, then Debian's /usr/bin/chromium (`apt-get install chromium`; .ci/run installs
 * it), then a browser Playwright itself installed; fails with a message that says how to get one.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
import jsQRModule from 'jsqr';

// jsqr is CommonJS with `exports.default`: depending on the loader the default import is the function or its module.
const jsQR = ((jsQRModule as unknown as { default?: unknown }).default ?? jsQRModule) as (data: Uint8ClampedArray, width: number, height: number) => { data: string } | null;

export function findChromium(env: NodeJS.ProcessEnv = process.env): string {
  const tried: string[] = [];
  if (env.WAFLEET_CHROMIUM) {
    if (existsSync(env.WAFLEET_CHROMIUM)) return env.WAFLEET_CHROMIUM;
    throw new Error(`WAFLEET_CHROMIUM is ${env.WAFLEET_CHROMIUM}, which does not exist`);
  }
  for (const candidate of ['/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    tried.push(candidate);
    if (existsSync(candidate)) return candidate;
  }
  try {
    const own = chromium.executablePath();
    tried.push(own);
    if (own && existsSync(own)) return own;
  } catch {
    // playwright-core without a downloaded browser: no path to offer.
  }
  throw new Error(`no Chromium for the console tests (tried WAFLEET_CHROMIUM, ${tried.join(', ')}): install one with \`apt-get update && apt-get install -y chromium\`, or set WAFLEET_CHROMIUM to a Chromium binary`);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: findChromium(),
    headless: true,
    // As root in CI containers Chromium needs --no-sandbox; the pages are our own console only.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

/** Reads a QR code from what the page shows: a screenshot of `selector`, decoded from its pixels. */
export async function readQrFromPage(page: Page, selector: string): Promise<string | null> {
  const png = PNG.sync.read(await page.locator(selector).screenshot());
  const code = jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length), png.width, png.height);
  return code?.data ?? null;
}

export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}
