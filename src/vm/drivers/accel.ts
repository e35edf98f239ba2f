import { closeSync, openSync, readFileSync } from "node:fs";
import { BangerError } from "../../errors";
import { hasHardwareVirt } from "../../host/cpu.ts";

/** Which accelerator the user asked for (config key `accel`). */
export type AccelChoice = "auto" | "kvm" | "tcg";

/** The accelerator QEMU actually runs with. */
export type Accel = "kvm" | "tcg";

/** Host probes behind a seam so detection is testable with injected text. */
export interface AccelDeps {
  /** Reads a host file; returns null when it cannot be read. */
  readFile(path: string): string | null;
  /** True when /dev/kvm opens read-write for this user. */
  canOpenKvm(): boolean;
  warn(msg: string): void;
}

/** The real probes. */
export const hostAccelDeps: Omit<AccelDeps, "warn"> = {
  readFile(path) {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return null;
    }
  },
  canOpenKvm() {
    try {
      closeSync(openSync("/dev/kvm", "r+"));
      return true;
    } catch {
      return false;
    }
  },
};

/** Why KVM is unusable here, or null when it is usable. */
export function kvmProblem(deps: Omit<AccelDeps, "warn">): string | null {
  const cpuinfo = deps.readFile("/proc/cpuinfo") ?? "";
  if (!hasHardwareVirt(cpuinfo)) return "the CPU flags in /proc/cpuinfo show no vmx or svm (no hardware virtualization)";
  if (!deps.canOpenKvm()) return "/dev/kvm is missing or cannot be opened read-write";
  return null;
}

/** Picks the accelerator: `auto` means KVM where it really works, else TCG with a visible warning. */
export function chooseAccel(choice: AccelChoice, deps: AccelDeps): Accel {
  if (choice === "tcg") return "tcg";
  const problem = kvmProblem(deps);
  if (choice === "kvm") {
    if (problem) {
      throw new BangerError("failed_precondition", `accel = "kvm" was requested but ${problem}`, {
        hint: 'Set accel = "auto" or "tcg" in config.toml, or enable virtualization (see `banger doctor`).',
      });
    }
    return "kvm";
  }
  if (problem) {
    deps.warn(`QEMU: no hardware virtualization; using TCG (slow): ${problem}`);
    return "tcg";
  }
  return "kvm";
}

/**
 * The host's TSC rate in kHz from /proc/cpuinfo's "cpu MHz", or null. Under TCG the
 * guest's TSC runs at the host's rate; a loaded host makes the guest's PIT calibration
 * fail and the boot then hangs, so the driver passes this as tsc_early_khz.
 */
export function hostTscKhz(cpuinfo: string): number | null {
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : null;
}
