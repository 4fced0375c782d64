import Foundation

/// Paths of the files tests read, all inside the repository.
public enum Fixtures {
    /// The repository root, found from this source file's location.
    public static let repositoryRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    /// `Tests/Fixtures/<relative>`.
    public static func path(_ relative: String) -> String {
        repositoryRoot + "/Tests/Fixtures/" + relative
    }

    /// `Samples/<relative>`.
    public static func sample(_ relative: String) -> String {
        repositoryRoot + "/Samples/" + relative
    }

    /// Every file in a fixtures subfolder whose name starts with `prefix`, sorted.
    public static func files(in folder: String, prefix: String = "", suffix: String = ".safetensors") -> [String] {
        let directory = path(folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(prefix) && $0.hasSuffix(suffix) }.sorted().map { directory + "/" + $0 }
    }
}

/// A fresh folder under the system temporary folder, removed on deinit.
public final class TemporaryDirectory {
    public let path: String

    public init(_ label: String = "qconv-test") {
        let base = NSTemporaryDirectory() + "\(label)-\(getpid())-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        path = base
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { path + "/" + name }

    /// Names in the folder, sorted (hidden files included).
    public func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }
}

/// What a run of the `qconv` binary produced.
public struct ProcessResult {
    /// The exit code, or the signal number when `crashed`.
    public let status: Int32
    /// The process died of a signal (a crash) instead of exiting.
    public let crashed: Bool
    public let stdout: String
    public let stderr: String
    /// The run took longer than the timeout it was given and was killed (SIGKILL).
    public var timedOut = false
}

/// Runs the `qconv` executable built next to the test bundle; with a
/// `timeout` (seconds), a run that takes longer is killed and reported as `timedOut`.
public func runQConv(_ arguments: [String], currentDirectory: String? = nil, timeout: Double? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: qconvExecutablePath)
    process.arguments = arguments
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let killer = timeout.map { seconds in
        let item = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
        return item
    }
    let started = Date()
    // Read both pipes before waiting so a large output cannot block the child.
    let outData = PipeData()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { outData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    killer?.cancel()
    var result = ProcessResult(status: process.terminationStatus, crashed: process.terminationReason == .uncaughtSignal,
                               stdout: String(decoding: outData.data, as: UTF8.self),
                               stderr: String(decoding: errData, as: UTF8.self))
    if let timeout, result.crashed, result.status == SIGKILL, Date().timeIntervalSince(started) >= timeout { result.timedOut = true }
    return result
}

/// What one pipe delivered, filled by the thread that reads it (the
/// `DispatchGroup` orders the write before the read).
private final class PipeData: @unchecked Sendable {
    var data = Data()
}

/// `.build/<configuration>/qconv`, beside the test executable.
public let qconvExecutablePath: String = {
    let testExecutable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: testExecutable).deletingLastPathComponent()
    // On some platforms the tests run from inside a .xctest bundle.
    while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.path + "/qconv") {
        directory.deleteLastPathComponent()
    }
    return directory.path + "/qconv"
}()

/// Writes bytes to a file (crafted inputs).
public func writeFile(_ path: String, _ bytes: [UInt8]) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// A safetensors file from a header string and a data section, for crafting bad inputs.
public func craftSafetensors(header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) -> [UInt8] {
    let json = Array(header.utf8)
    var length = (lengthOverride ?? UInt64(json.count)).littleEndian
    var bytes = withUnsafeBytes(of: &length) { Array($0) }
    bytes += json
    bytes += data
    return bytes
}

/// What `runQConvMeasured` saw: the exit status (or signal), stderr, the
/// wall time and the child's peak resident memory.
public struct MeasuredRun {
    public let status: Int32
    public let signal: Int32?
    public let stderr: String
    public let seconds: Double
    /// Peak resident set size of the child, in bytes (`VmHWM`, see `runQConvMeasured`).
    public let peakBytes: Int
}

/// Runs the binary with `posix_spawn` and waits for it with `wait4`; stdout
/// is discarded. The peak resident memory is the child's `VmHWM` (the high
/// water mark of its own address space), read from `/proc` every millisecond
/// until it exits: `ru_maxrss` cannot be used, since Linux carries the
/// high water mark of the address space a process had before `exec` into
/// it, and `posix_spawn`'s child had this test process's, which grows to
/// hundreds of megabytes over a whole `swift test`.
public func runQConvMeasured(_ arguments: [String]) throws -> MeasuredRun {
    let errPath = NSTemporaryDirectory() + "qconv-measured-\(getpid())-\(UUID().uuidString.prefix(8)).err"
    defer { unlink(errPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv = ([qconvExecutablePath] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    let started = Date()
    let spawned = posix_spawn(&pid, qconvExecutablePath, &actions, nil, argv, environ)
    guard spawned == 0 else { throw NSError(domain: "posix_spawn", code: Int(spawned)) }
    var peakKilobytes = 0
    while let kilobytes = highWaterMarkKilobytes(of: pid) {
        peakKilobytes = max(peakKilobytes, kilobytes)
        usleep(1000)
    }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let seconds = Date().timeIntervalSince(started)
    if peakKilobytes == 0 { peakKilobytes = usage.ru_maxrss }
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    let signaled = (status & 0x7F) != 0 && (status & 0x7F) != 0x7F
    return MeasuredRun(status: signaled ? 0 : (status >> 8) & 0xFF, signal: signaled ? status & 0x7F : nil, stderr: stderr,
                       seconds: seconds, peakBytes: peakKilobytes * 1024)
}

/// `VmHWM` of a running process, in kB; nil once it has exited (a zombie has no address space).
private func highWaterMarkKilobytes(of pid: pid_t) -> Int? {
    let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 16384)
    let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return nil }
    let status = String(decoding: bytes[..<count], as: UTF8.self)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
    return Int(String(line.filter(\.isNumber)))  // "VmHWM:\t    1844 kB"
}
