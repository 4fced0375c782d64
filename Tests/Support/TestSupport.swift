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
