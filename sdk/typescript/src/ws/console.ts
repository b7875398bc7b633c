import { TransportError, VoidVMError } from '../errors.js';
import { ManagedSocket, type ServerMessage, type SocketOptions } from './socket.js';

type SocketFactory = (hooks: Pick<SocketOptions, 'onOpen' | 'onMessage' | 'onFatal'>) => ManagedSocket;

type Waiter = {
  pattern: string | RegExp;
  partialLine: boolean;
  resolve: (text: string) => void;
  reject: (err: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
};

/** Unconsumed output kept for `waitForOutput` (older output is dropped). */
const MAX_PENDING = 1 << 20;

/** Options of {@link ConsoleSession.waitForOutput}. */
export interface WaitForOutputOptions {
  /**
   * Let a RegExp also match in the line still being printed (after the last `\n`), e.g. a
   * prompt such as `/[#$] $/`. Without it a RegExp only sees complete lines, because output
   * arrives in pieces and `/Linux \S+/` must not match `Linux voidv` of `Linux voidvm`.
   */
  partialLine?: boolean;
}

const anchorless = (re: RegExp): RegExp => new RegExp(re.source, re.flags.replace(/[gy]/g, ''));

/**
 * An interactive serial console over `/ws` (`terminal-connect` / `terminal-input` /
 * `terminal-output` / `terminal-disconnect`). Reconnects and re-attaches automatically.
 */
export class ConsoleSession {
  private readonly socket: ManagedSocket;
  private readonly outputListeners = new Set<(output: string) => void>();
  private readonly errorListeners = new Set<(err: VoidVMError) => void>();
  private readonly waiters = new Set<Waiter>();
  /** Output not yet consumed by `waitForOutput`. */
  private pending = '';
  private closed = false;

  constructor(
    readonly vmId: string,
    makeSocket: SocketFactory,
  ) {
    this.socket = makeSocket({
      onOpen: () => this.socket.send({ type: 'terminal-connect', data: { vmId, type: 'serial' } }),
      onMessage: (msg) => this.onMessage(msg),
      onFatal: (err) => this.fail(err),
    });
  }

  /** Opens the socket and attaches to the VM's serial console. */
  async connect(): Promise<this> {
    await this.socket.connect();
    return this;
  }

  /** Sends keystrokes/text to the VM (include `\n` or `\r` to submit a line). */
  write(input: string): void {
    if (this.closed) throw new TransportError({ code: 'SOCKET_CLOSED', message: 'Console is closed' });
    this.socket.send({ type: 'terminal-input', data: { vmId: this.vmId, input } });
  }

  /** Resizes the remote terminal. */
  resize(cols: number, rows: number): void {
    this.socket.send({ type: 'terminal-resize', data: { vmId: this.vmId, cols, rows } });
  }

  /** Calls `cb` with every chunk of output; returns a function that removes it. */
  onOutput(cb: (output: string) => void): () => void {
    this.outputListeners.add(cb);
    return () => this.outputListeners.delete(cb);
  }

  /** Server `error` messages for this console and fatal socket errors. */
  onError(cb: (err: VoidVMError) => void): () => void {
    this.errorListeners.add(cb);
    return () => this.errorListeners.delete(cb);
  }

  /**
   * Resolves with the output received up to and including the first match of `pattern`
   * (searching output not consumed by an earlier call), which is then consumed.
   *
   * A string matches literally as soon as it has arrived (prompts such as `'login: '` end no
   * line). A RegExp matches only within complete lines (up to the last `\n` received), so a
   * word split between two messages is seen whole; `{ partialLine: true }` also searches the
   * unfinished last line (for prompt regexes), where a match may still grow.
   * Rejects with `VoidVMError` code `WAIT_TIMEOUT` after `timeoutMs` (default 30000).
   */
  waitForOutput(pattern: string | RegExp, timeoutMs = 30_000, options: WaitForOutputOptions = {}): Promise<string> {
    const partialLine = options.partialLine ?? false;
    const hit = this.consume(pattern, partialLine);
    if (hit !== undefined) return Promise.resolve(hit);
    if (this.closed) return Promise.reject(new TransportError({ code: 'SOCKET_CLOSED', message: 'Console is closed' }));
    return new Promise<string>((resolve, reject) => {
      const waiter: Waiter = {
        pattern,
        partialLine,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(
            new VoidVMError({
              code: 'WAIT_TIMEOUT',
              message:
                `No console output matching ${String(pattern)} within ${timeoutMs} ms` +
                (this.onlyUnfinishedLineMatches(pattern, partialLine)
                  ? ' (the unfinished last line matches: pass { partialLine: true } for prompts)'
                  : ''),
              details: { tail: this.pending.slice(-500) },
            }),
          );
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Detaches (`terminal-disconnect`) and closes the socket. */
  close(): void {
    if (this.closed) return;
    if (this.socket.isOpen) this.socket.send({ type: 'terminal-disconnect', data: { vmId: this.vmId } });
    this.closed = true;
    this.socket.close();
    this.rejectAll(new TransportError({ code: 'SOCKET_CLOSED', message: 'Console is closed' }));
  }

  private consume(pattern: string | RegExp, partialLine: boolean): string | undefined {
    let end: number;
    if (typeof pattern === 'string') {
      const at = this.pending.indexOf(pattern);
      if (at < 0) return undefined;
      end = at + pattern.length;
    } else {
      const searched = partialLine ? this.pending : this.pending.slice(0, this.pending.lastIndexOf('\n') + 1);
      const m = anchorless(pattern).exec(searched);
      if (!m) return undefined;
      end = m.index + m[0].length;
    }
    const text = this.pending.slice(0, end);
    this.pending = this.pending.slice(end);
    return text;
  }

  private onlyUnfinishedLineMatches(pattern: string | RegExp, partialLine: boolean): boolean {
    return typeof pattern !== 'string' && !partialLine && anchorless(pattern).test(this.pending);
  }

  private onMessage(msg: ServerMessage): void {
    const data = (msg.data ?? {}) as { vmId?: string; output?: unknown; code?: string; message?: string };
    if (data.vmId !== undefined && data.vmId !== this.vmId) return;
    if (msg.type === 'terminal-output' && typeof data.output === 'string') {
      this.pending = (this.pending + data.output).slice(-MAX_PENDING);
      for (const cb of this.outputListeners) cb(data.output);
      for (const w of [...this.waiters]) {
        const hit = this.consume(w.pattern, w.partialLine);
        if (hit === undefined) continue;
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve(hit);
      }
    } else if (msg.type === 'error') {
      const err = new VoidVMError({
        code: data.code ?? 'WS_ERROR',
        message: data.message ?? 'Console error',
        details: msg.data,
      });
      for (const cb of this.errorListeners) cb(err);
      this.rejectAll(err);
    }
  }

  private fail(err: VoidVMError): void {
    this.closed = true;
    for (const cb of this.errorListeners) cb(err);
    this.rejectAll(err);
  }

  private rejectAll(err: unknown): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }
}
