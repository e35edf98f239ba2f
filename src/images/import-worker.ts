import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { BangerError, isErrorCode, toBangerError } from "../errors.ts";
import { glueEntries, type GlueEntry } from "./glue/index.ts";
import { importOci, type ExtraEntry, type ImportOciResult } from "./oci/import.ts";
import { moduleEntries } from "./kernel/modules-copy.ts";
import type { ImportLimits } from "./oci/unpack.ts";
import { hostRunner } from "../host/runner.ts";

/** The hidden first argument that turns this program into an import worker. */
export const IMPORT_WORKER_ARG = "__import-worker";

/** What the daemon hands an import worker on its stdin. */
export interface ImportJob {
  source: string;
  outPath: string;
  workDir: string;
  agentBinary: string;
  /** A built image's kernel modules to add: its rootfs and the kernel release. */
  modulesFrom?: { rootfs: string; release: string };
  agentVersion: string;
  limits: ImportLimits;
}

/** One line of the worker's answer on stdout. */
type WorkerLine = { progress: string } | { result: ImportOciResult } | { error: { code: string; message: string; hint?: string } };

/** Glue entries in the OCI importer's shape. */
async function asExtraEntries(entries: GlueEntry[]): Promise<ExtraEntry[]> {
  return Promise.all(
    entries.map(async (e): Promise<ExtraEntry> => {
      if (e.kind === "dir") return { path: e.path, type: "dir", mode: e.mode };
      if (e.kind === "symlink") return { path: e.path, type: "symlink", target: e.target };
      const content = e.content instanceof Blob ? new Uint8Array(await e.content.arrayBuffer()) : e.content;
      return { path: e.path, type: "file", content, mode: e.mode };
    }),
  );
}

const send = (line: WorkerLine) => process.stdout.write(`${JSON.stringify(line)}\n`);

/**
 * The worker side: reads one job from stdin, imports it and answers with JSON lines.
 * Unpacking and tar parsing are CPU-bound and partly synchronous; in this process they
 * cannot stall the daemon's RPC or DNS.
 */
export async function runImportWorker(): Promise<number> {
  orphanGuard();
  try {
    const job = JSON.parse(await Bun.stdin.text()) as ImportJob;
    const extraEntries = await asExtraEntries(glueEntries({ binary: job.agentBinary, version: job.agentVersion }));
    if (job.modulesFrom) {
      const workDir = join(job.workDir, "modules");
      mkdirSync(workDir, { recursive: true });
      extraEntries.push(...(await moduleEntries({ ...job.modulesFrom, workDir, runner: hostRunner })));
    }
    const result = await importOci({
      source: job.source,
      outPath: job.outPath,
      extraEntries,
      workDir: job.workDir,
      runner: hostRunner,
      limits: job.limits,
      onProgress: (progress) => send({ progress }),
    });
    send({ result });
    return 0;
  } catch (err) {
    const e = toBangerError(err);
    send({ error: { code: e.code, message: e.message, hint: e.hint } });
    return 1;
  }
}

/** Ends the worker and what it runs (its own process group) when the daemon that started it is gone. */
function orphanGuard(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid === parent) return;
    try {
      process.kill(-process.pid, "SIGKILL");
    } catch {
      process.exit(1);
    }
  }, 1000).unref();
}

/** Most stderr kept from a worker for an error message. */
const STDERR_TAIL = 8192;

/** The daemon side: runs `job` in a child process of this same program (`argv`), killed when `signal` aborts. */
export function importInWorker(argv: string[], job: ImportJob, onProgress: (line: string) => void, signal?: AbortSignal): Promise<ImportOciResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, [...argv.slice(1), IMPORT_WORKER_ARG], { stdio: ["pipe", "pipe", "pipe"], detached: true });
    let answer: WorkerLine | undefined;
    let stderr = "";
    const kill = () => {
      try {
        process.kill(-child.pid!, "SIGKILL"); // the worker and the mkfs/debugfs it runs
      } catch {}
    };
    signal?.addEventListener("abort", kill, { once: true });
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-STDERR_TAIL)));
    createInterface({ input: child.stdout! }).on("line", (text) => {
      const line = parseLine(text);
      if (line && "progress" in line) onProgress(String(line.progress).slice(0, 500));
      else if (line) answer = line;
    });
    child.on("error", (err) => reject(new BangerError("internal", `the import worker could not start: ${err.message}`, { cause: err })));
    child.on("close", (code, sig) => {
      signal?.removeEventListener("abort", kill);
      if (signal?.aborted) return reject(new BangerError("cancelled", "the import was cancelled"));
      if (answer && "result" in answer) return resolve(answer.result);
      if (answer && "error" in answer) return reject(workerError(answer.error));
      reject(
        new BangerError("internal", `the import worker died (${sig ?? `exit ${code}`}) without an answer: ${stderr.trim().split("\n").slice(-3).join(" | ")}`),
      );
    });
    child.stdin!.end(JSON.stringify(job));
  });
}

function parseLine(text: string): WorkerLine | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === "object" ? (v as WorkerLine) : undefined;
  } catch {
    return undefined;
  }
}

function workerError(e: { code: string; message: string; hint?: string }): BangerError {
  return new BangerError(isErrorCode(e.code) ? e.code : "internal", String(e.message), { hint: e.hint });
}
