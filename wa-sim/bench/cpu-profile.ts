import path from 'node:path';

/**
 * With WA_SIM_BENCH_PROFILE=<dir>, starts a CPU profile of this process and returns a function
 * that stops it and writes `<dir>/<name>.cpuprofile`; without it, returns undefined. Used by the
 * simulator benchmark (server side) and its load worker (Baileys side), to see where CPU goes.
 */
export async function startCpuProfile(): Promise<((name: string) => Promise<void>) | undefined> {
  const dir = process.env['WA_SIM_BENCH_PROFILE'];
  if (!dir) return undefined;
  const { Session } = await import('node:inspector/promises');
  const { mkdir, writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return async (name) => {
    const { profile } = await session.post('Profiler.stop');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    session.disconnect();
  };
}
