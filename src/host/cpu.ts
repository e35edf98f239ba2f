/**
 * True when a `flags` line of /proc/cpuinfo lists vmx (Intel) or svm (AMD). A /dev/kvm
 * without them (nested "PVM" KVM) hangs standard guest kernels, so the flag decides.
 */
export function hasHardwareVirt(cpuinfo: string): boolean {
  return cpuinfo.split("\n").some((line) => /^flags\s*:/.test(line) && /\s(vmx|svm)(\s|$)/.test(line));
}
