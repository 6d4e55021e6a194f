// The image's HEALTHCHECK: exit 0 when the reconciler answers GET /healthz with 200, else 1.
// Plain Node (the slim image has no curl). /healthz says the process is alive; /readyz is for
// alerts (a fleet that cannot reach Firestore is not helped by a container restart).
const port = Number(process.env.HTTP_PORT || 8080);
const host = !process.env.HTTP_HOST || process.env.HTTP_HOST === '0.0.0.0' || process.env.HTTP_HOST === '::' ? '127.0.0.1' : process.env.HTTP_HOST;
const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/healthz`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4_000) });
  if (!res.ok) console.error(`${url}: HTTP ${res.status}`);
  process.exit(res.ok ? 0 : 1);
} catch (err) {
  console.error(`${url}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
