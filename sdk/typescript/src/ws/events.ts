import { VoidVMError } from '../errors.js';
import type { Operation } from '../types.js';
import { ManagedSocket, type ServerMessage, type SocketOptions } from './socket.js';

/**
 * What to subscribe to. A bare string is a topic without parameters (e.g. `'vm-status-all'`).
 * `'operations'` delivers `operation` messages: every change of your operations (an admin's:
 * everyone's), with the operation as `data` (`OperationEventData`).
 */
export type Topic =
  | { topic: 'vm-status'; vmId: string }
  | { topic: 'vm-status-all' }
  | { topic: 'operations' }
  | { topic: 'vm-metrics'; vmId: string; interval?: number }
  | { topic: 'system-monitor'; interval?: number }
  | { topic: string; vmId?: string; interval?: number; [key: string]: unknown };

export type TopicInput = Topic | string;

/** Data of server events. `eventId` is monotonic and used to resume after a reconnect. */
export interface EventData {
  eventId?: number;
  vmId?: string;
  [key: string]: unknown;
}

/** Data of an `operation` message (topic `operations`): the operation as it now stands. */
export type OperationEventData = Operation & EventData;

export type VoidVMEvent = ServerMessage<EventData>;
export type EventHandler = (event: VoidVMEvent) => void;

export interface Subscription {
  readonly topics: Topic[];
  unsubscribe(): void;
}

type Listener = { topics: string[]; handler: EventHandler };
type TopicState = { topic: Topic; lastEventId: number | undefined; refs: number };
type SocketFactory = (hooks: Pick<SocketOptions, 'onOpen' | 'onMessage' | 'onFatal'>) => ManagedSocket;

const keyOf = (t: Topic): string =>
  JSON.stringify(Object.keys(t).sort().map((k) => [k, (t as Record<string, unknown>)[k]]));

const normalize = (t: TopicInput): Topic => (typeof t === 'string' ? { topic: t } : t);

/** Does `msg` belong to the stream of `topic`? */
export function matchesTopic(topic: Topic, msg: ServerMessage<EventData>): boolean {
  const data = (msg.data ?? {}) as EventData & { topic?: unknown };
  const vmId = data.vmId;
  const wanted = 'vmId' in topic ? topic.vmId : undefined;
  if (typeof data.topic === 'string') {
    return data.topic === topic.topic && (wanted === undefined || wanted === vmId);
  }
  if (topic.topic === 'operations') return msg.type === 'operation';
  const base = topic.topic === 'vm-status-all' ? 'vm-status' : topic.topic;
  if (msg.type === 'system-event') {
    return (base === 'vm-status' && (wanted === undefined || wanted === vmId)) || base === 'system-event';
  }
  return msg.type === base && (wanted === undefined || wanted === vmId);
}

/**
 * Real-time events over `/ws`. One shared socket, opened on the first subscription and closed
 * when the last one ends; subscriptions are re-sent with `lastEventId` after a reconnect, and
 * replayed duplicates are dropped.
 */
export class EventsAPI {
  private socket: ManagedSocket | undefined;
  private readonly topics = new Map<string, TopicState>();
  private readonly listeners = new Set<Listener>();
  private readonly rawListeners = new Set<(msg: ServerMessage) => void>();
  private readonly errorListeners = new Set<(err: VoidVMError) => void>();
  private lastEventId: number | undefined;
  private seq = 0;

  constructor(private readonly makeSocket: SocketFactory) {}

  /** Calls `handler` for every event of `topics`. Resolves once the socket is open. */
  async subscribe(topics: TopicInput | TopicInput[], handler: EventHandler): Promise<Subscription> {
    const list = (Array.isArray(topics) ? topics : [topics]).map(normalize);
    const socket = this.ensureSocket();
    const listener: Listener = { topics: list.map(keyOf), handler };
    this.listeners.add(listener);
    for (const topic of list) {
      const key = keyOf(topic);
      const state = this.topics.get(key);
      if (state) state.refs++;
      else {
        this.topics.set(key, { topic, lastEventId: undefined, refs: 1 });
        socket.send({ type: 'subscribe', data: { ...topic }, id: this.nextId() });
      }
    }
    let active = true;
    const subscription: Subscription = {
      topics: list,
      unsubscribe: () => {
        if (!active) return;
        active = false;
        this.release(listener);
      },
    };
    try {
      await socket.connect();
    } catch (err) {
      subscription.unsubscribe();
      throw err;
    }
    return subscription;
  }

  /** Async iterator over the events of `topics`; `break` or `close()` ends the subscription. */
  stream(topics: TopicInput | TopicInput[]): EventStream {
    return new EventStream(this, topics);
  }

  /** Every message the server sends on the events socket (including `error` and `pong`). */
  onMessage(handler: (msg: ServerMessage) => void): () => void {
    this.rawListeners.add(handler);
    return () => this.rawListeners.delete(handler);
  }

  /** Server `error` messages and fatal socket errors. */
  onError(handler: (err: VoidVMError) => void): () => void {
    this.errorListeners.add(handler);
    return () => this.errorListeners.delete(handler);
  }

  /** Ends every subscription and closes the socket. */
  close(): void {
    this.listeners.clear();
    this.topics.clear();
    this.socket?.close();
    this.socket = undefined;
  }

  private nextId(): string {
    return `sub-${++this.seq}`;
  }

  private ensureSocket(): ManagedSocket {
    if (this.socket && !this.socket.isClosed) return this.socket;
    const socket: ManagedSocket = this.makeSocket({
      onOpen: (reconnected) => {
        if (reconnected) this.resubscribe(socket); // first subscriptions are already queued
      },
      onMessage: (msg) => this.dispatch(msg as VoidVMEvent),
      onFatal: (err) => {
        if (this.socket === socket) this.socket = undefined;
        this.emitError(err);
      },
    });
    this.socket = socket;
    // Subscriptions that outlived a previous (failed) socket are sent again on the new one.
    this.resubscribe(socket);
    return socket;
  }

  /** Sends every active subscription, resuming after the last event seen. */
  private resubscribe(socket: ManagedSocket): void {
    for (const state of this.topics.values()) {
      const lastEventId = state.lastEventId ?? this.lastEventId;
      const data = lastEventId === undefined ? { ...state.topic } : { ...state.topic, lastEventId };
      socket.send({ type: 'subscribe', data, id: this.nextId() });
    }
  }

  private release(listener: Listener): void {
    if (!this.listeners.delete(listener)) return;
    for (const key of listener.topics) {
      const state = this.topics.get(key);
      if (!state || --state.refs > 0) continue;
      this.topics.delete(key);
      if (this.socket?.isOpen) this.socket.send({ type: 'unsubscribe', data: { ...state.topic }, id: this.nextId() });
    }
    if (this.listeners.size === 0) {
      this.socket?.close();
      this.socket = undefined;
    }
  }

  private emitError(err: VoidVMError): void {
    for (const fn of this.errorListeners) fn(err);
  }

  private dispatch(msg: VoidVMEvent): void {
    for (const fn of this.rawListeners) fn(msg);
    if (msg.type === 'error') {
      const d = (msg.data ?? {}) as { code?: string; message?: string; details?: unknown };
      this.emitError(
        new VoidVMError({ code: d.code ?? 'WS_ERROR', message: d.message ?? 'WebSocket error', details: msg.data }),
      );
      return;
    }
    const eventId = typeof msg.data?.eventId === 'number' ? msg.data.eventId : undefined;
    const fresh = new Set<string>();
    for (const [key, state] of this.topics) {
      if (!matchesTopic(state.topic, msg)) continue;
      if (eventId !== undefined) {
        if (state.lastEventId !== undefined && eventId <= state.lastEventId) continue; // replayed duplicate
        state.lastEventId = eventId;
      }
      fresh.add(key);
    }
    if (eventId !== undefined && (this.lastEventId === undefined || eventId > this.lastEventId)) {
      this.lastEventId = eventId;
    }
    if (fresh.size === 0) return;
    for (const listener of [...this.listeners]) {
      if (listener.topics.some((k) => fresh.has(k))) listener.handler(msg);
    }
  }
}

/** Buffered async iterator over an events subscription. */
export class EventStream implements AsyncIterableIterator<VoidVMEvent> {
  private readonly buffer: VoidVMEvent[] = [];
  private waiting: { resolve: (r: IteratorResult<VoidVMEvent>) => void; reject: (e: unknown) => void } | undefined;
  private done = false;
  private error: unknown;
  private readonly subscription: Promise<Subscription | undefined>;
  private readonly offError: () => void;

  constructor(events: EventsAPI, topics: TopicInput | TopicInput[]) {
    this.offError = events.onError((err) => {
      if (err.code === 'WS_CLOSED' || err.code === 'WS_REJECTED') this.finish(err);
    });
    this.subscription = events
      .subscribe(topics, (ev) => this.push(ev))
      .catch((err: unknown) => {
        this.finish(err);
        return undefined;
      });
  }

  /** Resolves once subscribed (rejects if the socket could not be opened). */
  async ready(): Promise<void> {
    await this.subscription;
    if (this.error !== undefined) throw this.error;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<VoidVMEvent>> {
    const value = this.buffer.shift();
    if (value !== undefined) return Promise.resolve({ value, done: false });
    if (this.error !== undefined) {
      const err = this.error;
      this.error = undefined;
      return Promise.reject(err);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  async return(): Promise<IteratorResult<VoidVMEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Ends the subscription; a pending `next()` resolves as done. */
  async close(): Promise<void> {
    this.finish(undefined);
    await this.subscription;
  }

  private push(ev: VoidVMEvent): void {
    if (this.done) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve({ value: ev, done: false });
    } else this.buffer.push(ev);
  }

  private finish(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.offError();
    void this.subscription.then((sub) => sub?.unsubscribe());
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      if (err === undefined) w.resolve({ value: undefined, done: true });
      else w.reject(err);
    } else if (err !== undefined) this.error = err;
  }
}
