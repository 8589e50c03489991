// Type declarations for channels.js, the browser client of channels-anyio.

/** A stream position, as the layer gives it in "__position__". */
export interface Position {
  epoch: string;
  offset: number;
}

export type ErrorCode = "timeout" | "disconnected" | "buffer_full" | "closed" | "stream_error";

/** Every failure of the client: `code` says which. */
export class ChannelsError extends Error {
  readonly name: "ChannelsError";
  readonly code: ErrorCode;
  /** ref (requests), limit (buffer_full), stream/error/code (stream_error). */
  readonly detail: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, detail?: Record<string, unknown>);
}

export interface BackoffOptions {
  /** First reconnection delay before jitter, ms. Default 500. */
  minDelay?: number;
  /** Largest delay before jitter, ms. Default 10000. */
  maxDelay?: number;
  /** Growth of the delay per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of the delay taken off at random (0..1). Default 0.5. */
  jitter?: number;
}

export interface SocketOptions extends BackoffOptions {
  /** ms a connection attempt may take to open before it is abandoned. Default 5000. */
  connectTimeout?: number;
  /** Frames kept while offline; one more throws "buffer_full". Default 100. */
  bufferLimit?: number;
  /** ms a buffered frame waits before it is dropped ("drop" event). Default 10000. */
  bufferTimeout?: number;
  /** Default timeout of stream.request(), ms. Default 10000. */
  requestTimeout?: number;
  /** Query parameter carrying the positions on (re)connect. Default "positions". */
  positionsParam?: string;
  /** Track "__position__" (dropping repeats) and send positions on reconnect. Default true. */
  recovery?: boolean;
  /** Positions to start from (from a previous page, say). */
  positions?: Record<string, Position> | null;
  /** WebSocket subprotocols. */
  protocols?: string | string[];
  /** Return false to stop reconnecting after this close. Default: always reconnect. */
  shouldReconnect?: ((event: CloseInfo) => boolean) | null;
  /** The WebSocket class (tests, Node). Default globalThis.WebSocket. */
  WebSocket?: unknown;
  /** Random source for the jitter, returning [0, 1). Default Math.random. */
  random?: (() => number) | null;
}

export const DEFAULTS: Readonly<Required<SocketOptions>>;

/** The delay before reconnection attempt `attempt` (1-based): within [base*(1-jitter), base],
 * base = min(maxDelay, minDelay * factor ** (attempt - 1)). */
export function backoffDelay(
  attempt: number,
  options?: BackoffOptions,
  random?: () => number,
): number;

export interface BufferItem {
  text: string;
  meta: Record<string, unknown>;
}

export class SendBuffer {
  constructor(options?: {limit?: number; timeout?: number; onExpire?: (item: BufferItem) => void});
  readonly limit: number;
  readonly timeout: number;
  readonly size: number;
  push(text: string, meta?: Record<string, unknown>): BufferItem;
  remove(item: BufferItem): boolean;
  drain(): BufferItem[];
}

export interface OpenInfo {
  /** True from the second open on. */
  reconnected: boolean;
  /** Failed attempts before this open. */
  attempt: number;
}
export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether a reconnection will follow. */
  reconnecting: boolean;
}
export interface ReconnectInfo {
  attempt: number;
  delay: number;
}
export interface ErrorInfo {
  error: string;
  stream?: string;
  code?: number;
  data?: unknown;
}
export interface DropInfo {
  text: string;
  reason: "timeout" | "closed";
}
export interface RecoveryInfo {
  group: string;
  /** False: messages were missed and cannot be replayed; reload your state. */
  recovered: boolean;
  position: Position | null;
  stream: string | null;
}

type Unsubscribe = () => void;

export interface SocketEvents {
  open: (info: OpenInfo) => void;
  close: (info: CloseInfo) => void;
  reconnect: (info: ReconnectInfo) => void;
  /** Every decoded frame. */
  frame: (frame: unknown) => void;
  /** Frames of a plain (non-multiplexed) consumer. */
  message: (message: unknown) => void;
  error: (info: ErrorInfo) => void;
  drop: (info: DropInfo) => void;
  recovery: (info: RecoveryInfo) => void;
}

export class Socket {
  constructor(url: string | URL | (() => string), options?: SocketOptions);
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly attempt: number;
  readonly buffer: SendBuffer;
  connect(): void;
  close(code?: number, reason?: string): void;
  connectUrl(): string;
  positions(): Record<string, Position>;
  send(data: unknown): "sent" | "buffered";
  stream(name: string): Stream;
  on<E extends keyof SocketEvents>(event: E, handler: SocketEvents[E]): Unsubscribe;
  off<E extends keyof SocketEvents>(event: E, handler: SocketEvents[E]): void;
}

export interface StreamEvents {
  message: (payload: any, frame: unknown) => void;
  error: (info: ErrorInfo) => void;
  recovery: (info: RecoveryInfo) => void;
}

export class Stream {
  readonly socket: Socket;
  readonly name: string;
  on(handler: StreamEvents["message"]): Unsubscribe;
  on<E extends keyof StreamEvents>(event: E, handler: StreamEvents[E]): Unsubscribe;
  off<E extends keyof StreamEvents>(event: E, handler: StreamEvents[E]): void;
  send(payload: unknown): "sent" | "buffered";
  request<T = any>(payload: unknown, options?: {timeout?: number}): Promise<T>;
}

export interface Member {
  channel: string;
  info: unknown;
}

export class Presence {
  constructor(source: Socket | Stream, group?: string | null);
  readonly group: string | null;
  apply(message: unknown): boolean;
  list(): Member[];
  onChange(handler: (members: Member[]) => void): Unsubscribe;
  stop(): void;
}
