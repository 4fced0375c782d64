import QConvProcessor

/// The instruction-set check `qconv` makes before it calls into QConvKit.
///
/// On x86-64 QConvKit is normally compiled for x86-64-v3 (see Package.swift);
/// on a CPU without those extensions its first SIMD instruction would kill
/// the process with SIGILL. This file is compiled for the baseline, reads the
/// CPU's flags from /proc/cpuinfo and explains instead.
enum CPUCheck {
    /// /proc/cpuinfo flags the kernels were compiled to use (`abm` is LZCNT).
    static let required: [String] = {
        #if QCONV_X86_64_V3
        return ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"]
        #else
        return []
        #endif
    }()

    /// The message for a CPU that lacks some required flag; nil when all are
    /// there, when nothing is required, or when the flags cannot be read.
    static func problem() -> String? {
        problem(flags: cpuFlags())
    }

    /// The message for a CPU with these /proc/cpuinfo `flags` (nil: unknown).
    static func problem(flags: Set<String>?) -> String? {
        guard !required.isEmpty, let flags else { return nil }
        let missing = required.filter { !flags.contains($0) }
        guard !missing.isEmpty else { return nil }
        return "this qconv was built for x86-64-v3 CPUs and this CPU lacks \(missing.joined(separator: ", "))\n"
            + "rebuild it for any x86-64 CPU with: QCONV_PORTABLE=1 swift build -c release"
    }

    /// The `flags` line of the first processor in /proc/cpuinfo.
    static func cpuFlags() -> Set<String>? { ProcessorFlags.current }
}
