import Foundation
import Glibc
import QConvKit
import QConvTestSupport
import XCTest

/// Inputs that are not regular files and outputs whose name is already taken
/// by a link: refused at once, never waited on, never followed.
final class HostileFilesTests: XCTestCase {
    private func read(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

    /// Runs `body` on another thread and fails if it has not returned within
    /// 5 seconds (a blocked `open` would otherwise hang the test run).
    private func withoutBlocking<T>(_ body: @escaping @Sendable () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> Result<T, Error>? {
        let done = DispatchSemaphore(value: 0)
        let result = ResultBox<T>()
        Thread.detachNewThread {
            result.value = Result { try body() }
            done.signal()
        }
        guard done.wait(timeout: .now() + 5) == .success else {
            XCTFail("blocked", file: file, line: line)
            return nil
        }
        return result.value
    }

    func testANamedPipeIsRefusedWithoutBeingWaitedOn() throws {
        let folder = TemporaryDirectory()
        let pipe = folder.file("pipe")
        XCTAssertEqual(mkfifo(pipe, 0o644), 0)
        for open in [{ _ = try ReadableFile(path: pipe) }, { _ = try Model.open(pipe) }, { _ = try SafeTensorsFile(path: pipe) },
                     { _ = try ContainerFile(path: pipe) }, { _ = try Checkpoint(path: pipe) }] as [@Sendable () throws -> Void] {
            guard case .failure(let error)? = withoutBlocking(open) else { XCTFail("opened a named pipe"); continue }
            XCTAssertEqual(error as? InputFileError, .notARegularFile(path: pipe, kind: "a named pipe (FIFO)"))
            XCTAssertEqual((error as? QConvError)?.category.exitCode, 3)
        }
    }

    func testDevicesAndSocketsAreRefusedAsFiles() throws {
        let folder = TemporaryDirectory()
        XCTAssertThrowsError(try ReadableFile(path: "/dev/null")) { error in
            XCTAssertEqual(error as? InputFileError, .notARegularFile(path: "/dev/null", kind: "a character device"))
        }
        // A Unix socket bound to a name in the folder.
        let socketPath = folder.file("socket")
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (i, byte) in socketPath.utf8.prefix(bytes.count - 1).enumerated() { bytes[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        XCTAssertEqual(bound, 0, "cannot bind a socket at \(socketPath)")
        for open in [{ _ = try ReadableFile(path: socketPath) }, { _ = try Model.open(socketPath) }] as [() throws -> Void] {
            XCTAssertThrowsError(try open()) { error in
                XCTAssertEqual(error as? InputFileError, .notARegularFile(path: socketPath, kind: "a socket"))
            }
        }
        writeFile(folder.file("file"), [1, 2, 3])
        XCTAssertEqual(try ReadableFile(path: folder.file("file")).readBytes(at: 0, count: 3), [1, 2, 3], "a regular file still reads")
    }

    // MARK: - A dangling link where the output goes

    func testADanglingLinkCountsAsAnExistingDestination() throws {
        let folder = TemporaryDirectory()
        for kind in [AtomicOutput.Kind.file, .directory] {
            let link = folder.file("out-\(kind)"), target = folder.file("nowhere-\(kind)")
            XCTAssertEqual(symlink(target, link), 0)
            XCTAssertThrowsError(try AtomicOutput(destination: link, kind: kind, overwrite: false, inputs: [])) { error in
                XCTAssertEqual(error as? OutputError, .exists(path: link))
            }
            let output = try AtomicOutput(destination: link, kind: kind, overwrite: true, inputs: [])
            if kind == .file {
                try output.makeWriter().close()
            } else {
                try output.createFile(named: "a.json").close()
            }
            try output.commit()
            XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link), "the link itself is replaced")
            XCTAssertFalse(FileManager.default.fileExists(atPath: target), "nothing is created where it pointed")
        }
        XCTAssertEqual(folder.contents(), ["out-directory", "out-file"])
    }

    /// A link that appears after the checks is not replaced at commit either.
    func testALinkAppearingBeforeCommitIsNotReplaced() throws {
        let folder = TemporaryDirectory()
        for kind in [AtomicOutput.Kind.file, .directory] {
            let destination = folder.file("out-\(kind)")
            let output = try AtomicOutput(destination: destination, kind: kind, overwrite: false, inputs: [])
            XCTAssertEqual(symlink(folder.file("nowhere"), destination), 0)
            XCTAssertThrowsError(try output.commit()) { XCTAssertEqual($0 as? OutputError, .exists(path: destination)) }
            output.discard()
            XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: destination), folder.file("nowhere"))
        }
        XCTAssertEqual(folder.contents(), ["out-directory", "out-file"])
    }

    // MARK: - Messages name the destination (finding 7)

    func testErrorsOfFilesInsideAFolderOutputNameTheDestination() throws {
        let folder = TemporaryDirectory()
        let destination = folder.file("model")
        let output = try AtomicOutput(destination: destination, kind: .directory, overwrite: false, inputs: [])
        let writer = try output.createFile(named: "model.safetensors")
        XCTAssertEqual(writer.path, destination + "/model.safetensors")
        try writer.close()
        // A name that cannot be created (its folder does not exist inside the output).
        XCTAssertThrowsError(try output.createFile(named: "sub/x.json")) { error in
            XCTAssertEqual((error as? IOError)?.path, destination + "/sub/x.json")
            XCTAssertFalse("\(error)".contains("qconv-tmp"), "\(error)")
        }
        output.discard()
        XCTAssertEqual(folder.contents(), [])
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, Error>?
}
