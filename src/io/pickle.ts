// An allow-listed unpickler that never executes anything, and a small protocol-2 pickle writer.
//
// The unpickler interprets the opcode subset a PyTorch state dict uses (the set torch's own
// weights-only loader accepts, plus protocol-4 framing opcodes). Globals are resolved only
// through the caller's allow-list: any other `module.name` is refused by name the moment the
// GLOBAL / STACK_GLOBAL opcode is read, so no constructor is ever looked up, let alone called.
//
// Python values map to: None → null, bool → boolean, int → number (bigint beyond 2^53),
// float → number, str → string, tuple/list → array, dict → Map, and allow-listed globals to
// whatever the allow-list's handlers return.

/** A global the allow-list admits, with what REDUCE / NEWOBJ / BUILD do with it. */
export interface PickleGlobal {
  /** Called by REDUCE with the argument tuple. */
  call?: (args: unknown[]) => unknown;
  /** Called by NEWOBJ with the argument tuple (classes only). */
  construct?: (args: unknown[]) => unknown;
  /** Plain value the global stands for when it is only referenced, not called. */
  value?: unknown;
}

/** Options for {@link unpickle}. */
export interface UnpickleOptions {
  /** Name of the source, used in every error message. */
  file: string;
  /** Allow-listed globals keyed by "module.name". */
  globals: ReadonlyMap<string, PickleGlobal>;
  /** Resolves BINPERSID ids; without it BINPERSID is refused. */
  persistentLoad?: (pid: unknown) => unknown;
  /** Applies BUILD state to an object; default: accept only objects that are Maps. */
  build?: (obj: unknown, state: unknown) => unknown;
}

/** Marker for a resolved global on the stack. */
export class GlobalRef {
  /** A resolved allow-listed global `module.name` with its handlers. */
  constructor(readonly module: string, readonly name: string, readonly impl: PickleGlobal) {}
  /** "module.name" */
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

const OPNAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/**
 * Interpret `data` as a pickle using only allow-listed globals. Throws
 * `refusing pickle global "m.n" in <file>` for anything else, and a specific error for
 * unsupported opcodes or malformed input.
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions): unknown {
  const { file, globals } = options;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let opAt = 0;

  const fail = (msg: string): never => {
    throw new Error(`invalid pickle in ${file} at byte ${opAt}: ${msg}`);
  };
  const need = (n: number) => {
    if (pos + n > data.byteLength) fail(`truncated (needs ${n} more bytes)`);
  };
  const u8 = () => {
    need(1);
    return data[pos++];
  };
  const u16 = () => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const bytes = (n: number) => {
    need(n);
    const b = data.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const str = (n: number) => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      return fail("string is not valid UTF-8");
    }
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail("unterminated text line");
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  // The stack floor is the innermost MARK (or 0): nothing below it may be touched.
  const floor = () => (marks.length ? marks[marks.length - 1] : 0);
  const pop = () => {
    if (stack.length <= floor()) fail("stack underflow");
    return stack.pop();
  };
  const top = () => {
    if (stack.length <= floor()) fail("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) fail("no MARK on the stack");
    return stack.splice(m!);
  };
  const resolve = (module: string, name: string): GlobalRef => {
    const key = `${module}.${name}`;
    const impl = globals.get(key);
    if (!impl) throw new Error(`refusing pickle global "${key}" in ${file}`);
    return new GlobalRef(module, name, impl);
  };
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof Map)) fail("SETITEM(S) target is not a dict");
    if (items.length % 2) fail("SETITEMS with an odd number of items");
    for (let i = 0; i < items.length; i += 2) {
      (dict as Map<unknown, unknown>).set(items[i], items[i + 1]);
    }
  };
  const argsOf = (v: unknown, op: string): unknown[] => {
    if (!Array.isArray(v)) fail(`${op} arguments are not a tuple`);
    return v as unknown[];
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) fail(`memo key ${i} not defined`);
    return memo.get(i);
  };
  const memoPut = (i: number) => {
    memo.set(i, top());
  };

  while (true) {
    opAt = pos;
    if (pos >= data.byteLength) fail("missing STOP");
    const op = data[pos++];
    switch (op) {
      case 0x80: { // PROTO
        const p = u8();
        if (p > 5) fail(`unsupported pickle protocol ${p}`);
        break;
      }
      case 0x95: // FRAME: 8-byte length; frames are just a hint for buffered readers.
        need(8);
        pos += 8;
        break;
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: { // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      }
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: { // LONG1: n-byte little-endian two's complement
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x47: { // BINFLOAT (big-endian f64)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x55: // SHORT_BINSTRING (py2 str, latin-1)
        stack.push(latin1.decode(bytes(u8())));
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x61: { // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail("APPEND target is not a list");
        (list as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail("APPENDS target is not a list");
        (list as unknown[]).push(...items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x90: { // ADDITEMS
        const items = popMark();
        const set = top();
        if (!(set instanceof Set)) fail("ADDITEMS target is not a set");
        for (const it of items) (set as Set<unknown>).add(it);
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        const name = line();
        stack.push(resolve(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("STACK_GLOBAL needs two strings");
        }
        stack.push(resolve(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = argsOf(pop(), "REDUCE");
        const fn = pop();
        if (!(fn instanceof GlobalRef) || !fn.impl.call) {
          fail(`REDUCE on ${fn instanceof GlobalRef ? `"${fn.qualname}"` : "a non-callable"}`);
        }
        stack.push((fn as GlobalRef).impl.call!(args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = argsOf(pop(), "NEWOBJ");
        const cls = pop();
        if (!(cls instanceof GlobalRef) || !cls.impl.construct) {
          fail(`NEWOBJ on ${cls instanceof GlobalRef ? `"${cls.qualname}"` : "a non-class"}`);
        }
        stack.push((cls as GlobalRef).impl.construct!(args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = pop();
        if (options.build) stack.push(options.build(obj, state));
        else if (obj instanceof Map) stack.push(obj);
        else fail("BUILD on an object that does not accept state");
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!options.persistentLoad) fail("persistent ids are not allowed here");
        stack.push(options.persistentLoad!(pid));
        break;
      }
      case 0x71: // BINPUT
        memoPut(u8());
        break;
      case 0x72: // LONG_BINPUT
        memoPut(u32());
        break;
      case 0x94: // MEMOIZE
        memoPut(memo.size);
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x30: // POP (drops the top item, or the innermost MARK when nothing is above it)
        if (marks.length && stack.length === floor()) marks.pop();
        else pop();
        break;
      default: {
        const name = OPNAMES[op] ?? "unknown";
        throw new Error(
          `unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")} (${name}) at byte ` +
            `${opAt} in ${file}`,
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writer (protocol 2): just enough to emit a torch state dict.

/** Builds a protocol-2 pickle byte stream opcode by opcode. */
export class PickleWriter {
  #chunks: Uint8Array[] = [];
  #cur = new Uint8Array(1 << 16);
  #len = 0;
  #memo = 0;

  #ensure(n: number): void {
    if (this.#len + n <= this.#cur.byteLength) return;
    this.#chunks.push(this.#cur.subarray(0, this.#len));
    this.#cur = new Uint8Array(Math.max(1 << 16, n));
    this.#len = 0;
  }

  /** Append raw bytes. */
  raw(bytes: Uint8Array | number[]): this {
    this.#ensure(bytes.length);
    this.#cur.set(bytes, this.#len);
    this.#len += bytes.length;
    return this;
  }

  /** PROTO n */
  proto(n = 2): this {
    return this.raw([0x80, n]);
  }
  /** MARK */
  mark(): this {
    return this.raw([0x28]);
  }
  /** STOP */
  stop(): this {
    return this.raw([0x2e]);
  }
  /** GLOBAL "module\nname\n" */
  global(module: string, name: string): this {
    this.raw([0x63]);
    return this.raw(new TextEncoder().encode(`${module}\n${name}\n`));
  }
  /** BINPUT / LONG_BINPUT of the next memo index. */
  put(): this {
    const i = this.#memo++;
    if (i < 256) return this.raw([0x71, i]);
    const b = new Uint8Array(5);
    b[0] = 0x72;
    new DataView(b.buffer).setUint32(1, i, true);
    return this.raw(b);
  }
  /** An int, in the smallest opcode that holds it. */
  int(v: number | bigint): this {
    if (typeof v === "number" && !Number.isSafeInteger(v)) throw new Error(`not an integer: ${v}`);
    const n = BigInt(v);
    if (n >= 0n && n < 256n) return this.raw([0x4b, Number(n)]);
    if (n >= 0n && n < 65536n) return this.raw([0x4d, Number(n) & 0xff, Number(n) >> 8]);
    if (n >= -(1n << 31n) && n < 1n << 31n) {
      const b = new Uint8Array(5);
      b[0] = 0x4a;
      new DataView(b.buffer).setInt32(1, Number(n), true);
      return this.raw(b);
    }
    // LONG1: minimal two's complement little-endian
    const bytes: number[] = [];
    let x = n;
    while (true) {
      const byte = Number(x & 0xffn);
      bytes.push(byte);
      x >>= 8n;
      if ((x === 0n && !(byte & 0x80)) || (x === -1n && byte & 0x80)) break;
    }
    return this.raw([0x8a, bytes.length, ...bytes]);
  }
  /** BINUNICODE */
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    const h = new Uint8Array(5);
    h[0] = 0x58;
    new DataView(h.buffer).setUint32(1, b.byteLength, true);
    return this.raw(h).raw(b);
  }
  /** NEWTRUE / NEWFALSE */
  bool(v: boolean): this {
    return this.raw([v ? 0x88 : 0x89]);
  }
  /** NONE */
  none(): this {
    return this.raw([0x4e]);
  }
  /** EMPTY_TUPLE */
  emptyTuple(): this {
    return this.raw([0x29]);
  }
  /** Close a tuple of the `n` items just pushed (TUPLE1/2/3, or TUPLE after a MARK). */
  tuple(n: number): this {
    if (n === 0) return this.emptyTuple();
    if (n <= 3) return this.raw([0x84 + n]);
    return this.raw([0x74]);
  }
  /** A tuple of ints (handles the MARK itself). */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.emptyTuple();
    if (values.length > 3) this.mark();
    for (const v of values) this.int(v);
    return this.tuple(values.length);
  }
  /** EMPTY_DICT */
  emptyDict(): this {
    return this.raw([0x7d]);
  }
  /** SETITEMS (after a MARK) */
  setItems(): this {
    return this.raw([0x75]);
  }
  /** REDUCE */
  reduce(): this {
    return this.raw([0x52]);
  }
  /** BINPERSID */
  persId(): this {
    return this.raw([0x51]);
  }
  /** BUILD */
  build(): this {
    return this.raw([0x62]);
  }

  /** The pickle bytes written so far. */
  bytes(): Uint8Array {
    const parts = [...this.#chunks, this.#cur.subarray(0, this.#len)];
    const total = parts.reduce((s, p) => s + p.byteLength, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.byteLength;
    }
    return out;
  }
}
