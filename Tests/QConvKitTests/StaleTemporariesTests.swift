import Foundation
import Glibc
import QConvKit
import QConvTestSupport
import XCTest

/// Temporaries left by killed runs are removed by the next run writing the
/// same destination, and only those of processes that no longer exist.
final class StaleTemporariesTests: XCTestCase {
    /// The PID of a process that has exited (and been reaped).
    private func deadProcessID() throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    func testTheNextRunRemovesTemporariesOfDeadProcessesOnly() throws {
        let folder = TemporaryDirectory()
        let dead = try deadProcessID()
        XCTAssertEqual(kill(dead, 0), -1)
        let host = StaleTemporaries.hostName, other = host + "x"
        let stale = [".out.qc.qconv-tmp-\(host)-\(dead)-0", ".out.qc.qconv-tmp-\(host)-\(dead)-1", ".out.qc.qconv-tmp-\(host)-\(dead)-0-old2"]
        let kept = [".out.qc.qconv-tmp-\(host)-1-0",  // PID 1 is alive
                    ".out.qc.qconv-tmp-\(host)-\(getpid())-7",  // this process
                    ".out.qc.qconv-tmp-\(host)-\(dead)-x", ".out.qc.qconv-tmp-\(host)-\(dead)", ".out.qc.qconv-tmp-\(host)-\(dead)-0-new",  // not qconv's names
                    ".other.qc.qconv-tmp-\(host)-\(dead)-0", "out.qc.qconv-tmp-\(dead)-0",  // another destination, not hidden
                    ".out.qc.qconv-tmp-\(other)-\(dead)-0", ".out.qc.qconv-tmp-\(dead)-1"]  // another host, no host
        for name in stale + kept { writeFile(folder.file(name), [1]) }
        try FileManager.default.createDirectory(atPath: folder.file(".out.qc.qconv-tmp-\(host)-\(dead)-2"), withIntermediateDirectories: false)
        writeFile(folder.file(".out.qc.qconv-tmp-\(host)-\(dead)-2/model.safetensors"), [1])
        // A stale name that is a link: the link is removed, never what it points to.
        writeFile(folder.file("target"), [9])
        XCTAssertEqual(symlink(folder.file("target"), folder.file(".out.qc.qconv-tmp-\(host)-\(dead)-3")), 0)

        let reported = Locked<[StaleTemporaries.Removal]>([])
        StaleTemporaries.setHandler { removal in reported.withLock { $0.append(removal) } }
        defer { StaleTemporaries.setHandler(nil) }
        let output = try AtomicOutput(destination: folder.file("out.qc"), kind: .file, overwrite: false, inputs: [])
        output.discard()

        let removed = stale + [".out.qc.qconv-tmp-\(host)-\(dead)-2", ".out.qc.qconv-tmp-\(host)-\(dead)-3"]
        XCTAssertEqual(reported.withLock { $0 }.map(\.path).sorted(), removed.map { folder.file($0) }.sorted())
        XCTAssertEqual(Set(reported.withLock { $0 }.map(\.processID)), [dead])
        XCTAssertEqual(folder.contents(), (kept + ["target"]).sorted())
        XCTAssertEqual(FileManager.default.contents(atPath: folder.file("target")), Data([9]))
    }
}
