#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU's instruction-set flags as Linux lists them in /proc/cpuinfo
/// (`avx2`, `fma`, `avx512f`, ...). Linux leaves out the flags of
/// extensions the kernel has not enabled, so a listed flag is usable.
///
/// This module is compiled for the baseline of its architecture: `qconv`
/// reads the flags before it calls anything compiled for wider
/// instructions, and QConvKit reads them to pick its 512-bit kernels.
public enum ProcessorFlags {
    /// The flags of this machine's first processor, read once; nil where
    /// there is no /proc/cpuinfo (macOS) or no `flags` line (other CPUs).
    public static let current: Set<String>? = read(path: "/proc/cpuinfo")

    /// The `flags` line of the first processor in a cpuinfo file.
    public static func read(path: String) -> Set<String>? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 8192)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            guard text.hasPrefix("flags"), let colon = text.firstIndex(of: ":") else { continue }
            return Set(text[text.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init))
        }
        return nil
    }
}
