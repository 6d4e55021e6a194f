/**
 * A FIFO async mutex. Small enough to own rather than depend on; callers that need per-key locks
 * use KeyedMutex, which drops a key's entry once nobody holds or waits for it.
 */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();
  #holders = 0;

  /** Runs `fn` once every earlier caller has finished; its result or error passes through. */
  runExclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    this.#holders += 1;
    const run = this.#tail.then(fn);
    // The chain continues whether fn resolved or threw; the caller sees the outcome via `run`.
    this.#tail = run.then(
      () => this.#release(),
      () => this.#release(),
    );
    return run;
  }

  /** True while someone holds the lock or waits for it. */
  get isLocked(): boolean {
    return this.#holders > 0;
  }

  #release(): void {
    this.#holders -= 1;
  }
}

export class KeyedMutex<K = string> {
  readonly #locks = new Map<K, Mutex>();

  async runExclusive<T>(key: K, fn: () => T | Promise<T>): Promise<T> {
    let mutex = this.#locks.get(key);
    if (!mutex) {
      mutex = new Mutex();
      this.#locks.set(key, mutex);
    }
    try {
      return await mutex.runExclusive(fn);
    } finally {
      if (!mutex.isLocked && this.#locks.get(key) === mutex) this.#locks.delete(key);
    }
  }
}
