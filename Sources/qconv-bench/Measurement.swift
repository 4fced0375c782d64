import Glibc
import QConvKit

/// One run of a command: wall time and the peak resident set size the kernel
/// reports for the child (`ru_maxrss`, which counts mapped file pages too).
struct Measurement {
    var seconds: Double
    var peakRSSBytes: UInt64
    var status: Int32
}

enum Runner {
    /// Runs `arguments` (argv[0] looked up in PATH), with stdout and stderr
    /// discarded, and measures it.
    static func measure(_ arguments: [String]) -> Measurement {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let started = monotonicSeconds()
        let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
        guard spawned == 0 else { return Measurement(seconds: 0, peakRSSBytes: 0, status: -1) }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let seconds = monotonicSeconds() - started
        let exitCode = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Measurement(seconds: seconds, peakRSSBytes: UInt64(usage.ru_maxrss) * 1024, status: exitCode)
    }

    /// Runs a shell command line, for setup steps; returns its exit status.
    @discardableResult
    static func shell(_ command: String) -> Int32 {
        measure(["/bin/sh", "-c", command]).status
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
