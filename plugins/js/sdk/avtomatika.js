// Write Avtomatika blueprints in JavaScript.
//
// A blueprint is a job state machine compiled to a WebAssembly component by
// componentize-js against the `blueprint` world of `wit/`. The world exports
// the `handler` interface, which componentize-js expects as an exported object
// named `handler` with `describe` and `handle` functions. `blueprint()` builds
// that object from two plain functions, the way `export!` does in the Rust SDK
// (plugins/rust/sdk):
//
//   import { blueprint, Describe, State, Next, Task } from '../../sdk/avtomatika.js';
//
//   export const handler = blueprint({
//     describe: () =>
//       new Describe('hello')
//         .endpoint('v1', '/jobs/hello')
//         .state(State.start('start').to('finished', 'failed'))
//         .state(State.finished('finished'))
//         .state(State.failed('failed')),
//
//     handle(job) {
//       switch (job.state) {
//         case 'start':
//           return Next.dispatch(
//             new Task('greet', { name: job.initialData.name }).on('success', 'finished').on('failure', 'failed'),
//           );
//         default:
//           throw new Error(`no handler for state ${job.state}`);
//       }
//     },
//   });
//
// What crosses the boundary: WIT records are objects with camelCase fields,
// variants are `{ tag, val }`, options are a value or `undefined`, and every
// WIT `json` is a string holding one JSON document. This module parses and
// serialises those strings, so handlers only see and return plain values.
//
// Errors: an exception thrown by `handle` (or a non-Error value thrown) becomes
// the call's `err` with the exception's message; the host retries the handler
// and, when retries run out, quarantines the job with that message. Without
// this wrapper componentize-js would rethrow an `Error`, which traps instead.
//
// Calls may share a live instance (the host keeps a few per blueprint unless
// it is configured for a fresh one per call), so module variables may or may
// not survive to the next call, even one for another job or client. Never
// rely on them: state belongs in the job's history or a data store.
//
// Data stores shared by the blueprint's jobs are `Store`s, the job's files in
// S3 are `files`, logging is `log`.

import * as dataStore from 'avtomatika:blueprint/data-store@1.1.0';
import { log as hostLog } from 'avtomatika:blueprint/log@1.1.0';
import * as taskFiles from 'avtomatika:blueprint/task-files@1.1.0';

/** A blueprint's name, endpoint and states, returned by `describe`. */
export class Describe {
  /**
   * A blueprint called `name` with no endpoint and no states yet. Without
   * `endpoint`, it runs only as a child job or on a schedule.
   */
  constructor(name) {
    this.name = name;
    this.apiVersion = undefined;
    this.apiEndpoint = undefined;
    this.states = [];
  }

  /** Jobs are created with `POST /api/{version}{endpoint}`, e.g. `('v1', '/jobs/hello')`. */
  endpoint(version, endpoint) {
    this.apiVersion = version;
    this.apiEndpoint = endpoint;
    return this;
  }

  /** Adds a state. */
  state(state) {
    this.states.push(state);
    return this;
  }
}

/** One state and the states its handler may move the job to. */
export class State {
  /** An intermediate state whose handler runs when a job enters it. */
  constructor(name) {
    this.name = name;
    this.start = false;
    this.end = undefined;
    this.transitions = [];
  }

  /** The state every job begins in (exactly one per blueprint). */
  static start(name) {
    const state = new State(name);
    state.start = true;
    return state;
  }

  /** An end state: entering it ends the job `finished`. */
  static finished(name) {
    const state = new State(name);
    state.end = 'finished';
    return state;
  }

  /** An end state: entering it ends the job `failed`. */
  static failed(name) {
    const state = new State(name);
    state.end = 'failed';
    return state;
  }

  /**
   * Every state this state's handler may move the job to: targets of `goTo`,
   * of a task's, approval's or child run's transitions, and an aggregator. Takes
   * names or arrays of names.
   */
  to(...states) {
    this.transitions.push(...states.flat());
    return this;
  }
}

/** The strategies of the WIT `dispatch-strategy` enum, where they are documented. */
export const Strategy = Object.freeze({
  DEFAULT: 'default',
  ROUND_ROBIN: 'round-robin',
  LEAST_CONNECTIONS: 'least-connections',
  CHEAPEST: 'cheapest',
  BEST_VALUE: 'best-value',
});

/**
 * Which worker may take a task and how long it may take: the WIT `routing`
 * record, where its rules are documented. `Task` and `Branch` extend it.
 */
class Routed {
  #strategy = Strategy.DEFAULT;
  #requirements = undefined;
  #maxCost = undefined;
  #timeoutSeconds = undefined;

  /** How the host chooses among the workers that qualify (a `Strategy`; default: warm cache, then cheapest). */
  strategy(strategy) {
    this.#strategy = strategy;
    return this;
  }

  /** What the worker must have, e.g. `{ gpu_info: { vram_gb: 16 } }`. */
  requires(requirements) {
    this.#requirements = requirements;
    return this;
  }

  /** Only workers whose cost for the task is at most `maxCost`. */
  maxCost(maxCost) {
    this.#maxCost = maxCost;
    return this;
  }

  /** Seconds the worker has for its result (overrides `WORKER_TIMEOUT_SECONDS`). */
  timeoutSeconds(seconds) {
    this.#timeoutSeconds = seconds;
    return this;
  }

  routingToWit() {
    return {
      strategy: this.#strategy,
      resourceRequirements: this.#requirements === undefined ? undefined : toJson(this.#requirements),
      maxCost: this.#maxCost,
      timeoutSeconds: this.#timeoutSeconds,
    };
  }
}

/** A task for a remote worker (`Next.dispatch`). */
export class Task extends Routed {
  #taskType;
  #params;
  #transitions = [];
  #priority = 0;

  /** A task of `taskType` with `params` (an object) and no transitions yet. */
  constructor(taskType, params = {}) {
    super();
    this.#taskType = taskType;
    this.#params = params;
  }

  /** When the worker answers with `status`, move the job to `state`. */
  on(status, state) {
    this.#transitions.push({ status, state });
    return this;
  }

  /** Higher runs sooner among one worker's queued tasks (default 0). */
  priority(priority) {
    this.#priority = priority;
    return this;
  }

  toWit() {
    return {
      taskType: this.#taskType,
      params: toJson(this.#params),
      transitions: this.#transitions,
      priority: this.#priority,
      routing: this.routingToWit(),
    };
  }
}

/** One branch of a parallel step (`Next.parallel`): a task without transitions. */
export class Branch extends Routed {
  #taskType;
  #params;
  #priority = 0;

  /** A branch running a task of `taskType` with `params` (an object). */
  constructor(taskType, params = {}) {
    super();
    this.#taskType = taskType;
    this.#params = params;
  }

  /** Higher runs sooner among one worker's queued tasks (default 0). */
  priority(priority) {
    this.#priority = priority;
    return this;
  }

  toWit() {
    return {
      taskType: this.#taskType,
      params: toJson(this.#params),
      priority: this.#priority,
      routing: this.routingToWit(),
    };
  }
}

/** A question for a person (`Next.awaitApproval`) and where each decision leads. */
export class Approval {
  #message;
  #transitions = [];

  /** Asks a person `message` (shown in the job's state), with no decisions yet. */
  constructor(message) {
    this.#message = message;
  }

  /** When the person decides `decision`, move the job to `state`. Declare at least one. */
  on(decision, state) {
    this.#transitions.push({ status: decision, state });
    return this;
  }

  toWit() {
    return { message: this.#message, transitions: this.#transitions };
  }
}

/** Another blueprint to run as a child job (`Next.runBlueprint`). */
export class ChildRun {
  #blueprint;
  #initialData;
  #transitions = [];

  /** A child job of the loaded blueprint `blueprint`, created with `initialData` (an object). */
  constructor(blueprint, initialData = {}) {
    this.#blueprint = blueprint;
    this.#initialData = initialData;
  }

  /** When the child ends with `status` (`finished`, `failed`, `cancelled`, `quarantined`), move the parent to `state`. */
  on(status, state) {
    this.#transitions.push({ status, state });
    return this;
  }

  toWit() {
    return { blueprint: this.#blueprint, initialData: toJson(this.#initialData), transitions: this.#transitions };
  }
}

/** A handler's answer: one action and an optional history update. */
export class Next {
  #action;
  #history;

  constructor(action) {
    this.#action = action;
  }

  /** Move the job to `state` (an end state ends it). */
  static goTo(state) {
    return new Next({ tag: 'go-to', val: state });
  }

  /** Hand `task` (a `Task`) to a worker and wait for its result. */
  static dispatch(task) {
    return new Next({ tag: 'dispatch-task', val: task.toWit() });
  }

  /**
   * Hand every branch (a `Branch`) to a worker at once; when each has a
   * result, whatever its status, move to `aggregateInto`, whose handler reads
   * them in `job.aggregationResults`. `aggregateInto` must be among the
   * current state's transitions, and there must be at least one branch.
   */
  static parallel(aggregateInto, branches) {
    return new Next({ tag: 'dispatch-parallel', val: { branches: branches.map((b) => b.toWit()), aggregateInto } });
  }

  /** Wait until a person decides (an `Approval`) through `job.approvalPath`. */
  static awaitApproval(approval) {
    return new Next({ tag: 'await-human-approval', val: approval.toWit() });
  }

  /** Run `child` (a `ChildRun`) as a child job; the next handler reads it in `job.childResult`. */
  static runBlueprint(child) {
    return new Next({ tag: 'run-blueprint', val: child.toWit() });
  }

  /** End the job `failed` with `message` as its error message. */
  static fail(message) {
    return new Next({ tag: 'fail', val: String(message) });
  }

  /** Also merge `update` (an object) into the job's state history. */
  withHistory(update) {
    this.#history = update;
    return this;
  }

  toWit() {
    return { action: this.#action, stateHistoryUpdate: this.#history === undefined ? undefined : toJson(this.#history) };
  }
}

/**
 * The job a handler runs for, with its JSON documents parsed: `id`,
 * `blueprint`, `state`, `initialData`, `history`, `client` (`name`, `plan`,
 * `params`), and, where they apply, `aggregationResults`, `childResult` and
 * `webhookUrl` (otherwise `undefined`).
 */
export class Job {
  #context;
  // Parsed on first read: parsing costs the interpreter microseconds per
  // document, and most handlers read one or two of them.
  #parsed = {};

  constructor(context) {
    this.#context = context;
    this.id = context.jobId;
    this.blueprint = context.blueprint;
    this.state = context.currentState;
    this.webhookUrl = context.webhookUrl ?? undefined;
  }

  get initialData() {
    return this.#parse('initialData', 'initial-data', this.#context.initialData);
  }

  get history() {
    return this.#parse('history', 'state-history', this.#context.stateHistory);
  }

  get client() {
    const client = this.#context.client;
    return this.#parse('client', 'client params', client.params, (params) => ({
      name: client.name,
      plan: client.plan,
      params,
    }));
  }

  get aggregationResults() {
    return this.#parse('aggregationResults', 'aggregation-results', this.#context.aggregationResults);
  }

  get childResult() {
    return this.#parse('childResult', 'child-result', this.#context.childResult);
  }

  #parse(field, what, text, wrap = (value) => value) {
    if (!(field in this.#parsed)) {
      this.#parsed[field] = text === undefined || text === null ? undefined : wrap(fromJson(what, text));
    }
    return this.#parsed[field];
  }

  /** The path at which a person decides this job while it waits for approval. */
  get approvalPath() {
    return `/_public/webhooks/approval/${this.id}`;
  }
}

/**
 * The `handler` export for a blueprint made of `describe()` (returning a
 * `Describe`) and `handle(job)` (returning a `Next`, or throwing).
 */
export function blueprint({ describe, handle }) {
  return {
    describe() {
      const info = describe();
      return {
        name: info.name,
        apiVersion: info.apiVersion,
        apiEndpoint: info.apiEndpoint,
        states: info.states.map((s) => ({ name: s.name, start: s.start, end: s.end, transitions: s.transitions })),
      };
    },

    handle(context) {
      try {
        const next = handle(new Job(context));
        if (!(next instanceof Next)) {
          return { tag: 'err', val: `handler for state ${context.currentState} returned ${String(next)}, not a Next` };
        }
        return { tag: 'ok', val: next.toWit() };
      } catch (error) {
        return { tag: 'err', val: error instanceof Error ? error.message : String(error) };
      }
    },
  };
}

/** A store operation failed: `kind` is `unavailable` (a retry may succeed) or `invalid`. */
export class StoreError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.name = 'StoreError';
    this.kind = kind;
  }
}

/**
 * A named key-value store shared by every job of the blueprint (on every
 * host instance); values are anything JSON can hold. Each method throws a
 * `StoreError` when the host refuses or cannot reach the store; uncaught, it
 * becomes the handler's error and the host retries the handler.
 */
export class Store {
  /** The store `name` (stores of other blueprints are never seen). */
  constructor(name) {
    this.name = name;
  }

  /** The value under `key`, or `undefined` when there is none. */
  get(key) {
    const text = storeCall(() => dataStore.get(this.name, key));
    return text === undefined ? undefined : fromJson(`store ${this.name} value`, text);
  }

  /** Sets `key` to `value`. */
  set(key, value) {
    storeCall(() => dataStore.set(this.name, key, toJson(value)));
  }

  /** Deletes `key`; true when it existed. */
  delete(key) {
    return storeCall(() => dataStore.delete(this.name, key));
  }

  /**
   * Adds `delta` (default 1) to the integer under `key` (missing counts as 0)
   * in one atomic step and returns the new value, a Number (exact up to 2^53).
   */
  increment(key, delta = 1) {
    return Number(storeCall(() => dataStore.increment(this.name, key, BigInt(delta))));
  }
}

function storeCall(call) {
  return witCall(call, StoreError);
}

/**
 * A file operation failed: `kind` is `disabled` (no S3 configured),
 * `not-found`, `invalid` (a bad name, over 1 MiB, a URI outside the job's
 * bucket) or `unavailable` (S3 unreachable; a retry may succeed).
 */
export class FileError extends Error {
  constructor(kind, message) {
    super(message ? `${kind}: ${message}` : kind);
    this.name = 'FileError';
    this.kind = kind;
  }
}

/**
 * The job's own files in S3 (`wit/task-files.wit`). Names are relative to the
 * job's folder (`input.csv`, `frames/0001.png`), which goes when the job ends.
 * A handler reads and writes files of up to 1 MiB; larger ones pass between
 * workers as URIs (`uri`, `adopt`). Each method throws a `FileError`.
 * A file is `{ name, size, uri }`, its size a Number.
 */
export const files = {
  /** The job's files, in name order. */
  list() {
    return filesCall(() => taskFiles.list()).map(fileInfo);
  },

  /** The contents of `name`, a Uint8Array. */
  read(name) {
    return filesCall(() => taskFiles.read(name));
  },

  /** The contents of `name`, decoded as UTF-8. */
  readText(name) {
    return new TextDecoder().decode(files.read(name));
  },

  /** Creates or replaces `name` with `contents` (a string, written as UTF-8, or bytes); returns its URI. */
  write(name, contents) {
    const bytes = typeof contents === 'string' ? new TextEncoder().encode(contents) : contents;
    return filesCall(() => taskFiles.write(name, bytes));
  },

  /** Deletes `name`; true when it existed. */
  delete(name) {
    return filesCall(() => taskFiles.delete(name));
  },

  /** The `s3://` URI of `name`, existing or not: hand it to a worker. */
  uri(name) {
    return filesCall(() => taskFiles.uri(name));
  },

  /** Moves the object at the `s3://` URI `source` (e.g. a worker's upload) into the job's folder as `name`. */
  adopt(source, name) {
    return fileInfo(filesCall(() => taskFiles.adopt(source, name)));
  },
};

function fileInfo({ name, size, uri }) {
  return { name, size: Number(size), uri };
}

function filesCall(call) {
  return witCall(call, FileError);
}

/**
 * Runs an imported WIT function, turning its `err` (which componentize-js
 * throws with the error variant as `payload`) into an `ErrorClass(kind, message)`.
 */
function witCall(call, ErrorClass) {
  try {
    return call();
  } catch (error) {
    const payload = error?.payload;
    if (payload !== undefined && typeof payload.tag === 'string') {
      throw new ErrorClass(payload.tag, payload.val === undefined ? '' : String(payload.val));
    }
    throw error;
  }
}

/** Structured logging into the host's log, tagged with the blueprint and job. */
export const log = Object.fromEntries(
  ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [
    level,
    (message, fields = {}) => hostLog(level, String(message), Object.entries(fields).map(([k, v]) => [k, String(v)])),
  ]),
);

function toJson(value) {
  // `JSON.stringify(undefined)` is not a string; the host wants a document.
  return JSON.stringify(value ?? null);
}

function fromJson(what, text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`host sent invalid ${what} JSON: ${error.message}`);
  }
}
